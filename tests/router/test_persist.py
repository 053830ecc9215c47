"""Saving and loading routers with skops: identical predictions, and refusal of files that are not ours."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ragroute.errors import UserError
from router.persist import RouterBundle, load_router, save_router

QUESTIONS = [
    "Do statins reduce mortality in elderly patients with heart failure and chronic kidney disease?",
    "What is malaria?",
    "Is laparoscopic appendectomy safe in pregnancy?",
]
SIGNALS = [{"top_score": 5.0, "margin": 0.4}, None, {"top_score": 12.0}]


def test_round_trip_gives_identical_predictions(fitted_bundle: RouterBundle, labelled, tmp_path: Path) -> None:
    path = save_router(fitted_bundle, tmp_path / "router.skops")
    loaded = load_router(path)
    before = fitted_bundle.score(labelled.questions, labelled.signals)
    after = loaded.score(labelled.questions, labelled.signals)
    np.testing.assert_array_equal(before, after)
    assert loaded.threshold == fitted_bundle.threshold
    assert loaded.metadata == json.loads(json.dumps(fitted_bundle.metadata))
    assert loaded.metadata["data_hash"] == labelled.data_hash
    assert {"scikit-learn", "skops", "numpy"} <= set(loaded.metadata["versions"])
    use_teacher, score = loaded.route(QUESTIONS[0], SIGNALS[0])
    assert score == pytest.approx(loaded.score(QUESTIONS[:1], SIGNALS[:1])[0])
    assert use_teacher == (score >= loaded.threshold)
    assert ((before >= loaded.threshold).mean() - 0.4) < 0.1  # in-sample share near the requested 0.4


def test_fast_path_matches_the_pipeline(fitted_bundle: RouterBundle) -> None:
    matrix = fitted_bundle.features(QUESTIONS, SIGNALS)
    expected = fitted_bundle.estimator.predict_proba(matrix)[:, 1]
    np.testing.assert_allclose(fitted_bundle.score(QUESTIONS, SIGNALS), expected, rtol=1e-12, atol=1e-12)


def test_missing_signals_take_training_medians(fitted_bundle: RouterBundle) -> None:
    medians = fitted_bundle.signal_defaults
    assert fitted_bundle.score(QUESTIONS[1:2])[0] == fitted_bundle.score(QUESTIONS[1:2], [medians])[0]
    assert fitted_bundle.score([]).shape == (0,)
    with pytest.raises(TypeError):
        fitted_bundle.score("one question as a string")


def _rewrite_schema(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "schema.json":
                data = json.dumps(edit(json.loads(data))).encode()
            zout.writestr(item, data)
    return dst


def _replace_class(node, old: str, module: str, name: str):
    if isinstance(node, dict):
        if node.get("__class__") == old:
            node["__module__"], node["__class__"] = module, name
        for value in node.values():
            _replace_class(value, old, module, name)
    elif isinstance(node, list):
        for value in node:
            _replace_class(value, old, module, name)
    return node


def test_tampered_file_is_refused(fitted_bundle: RouterBundle, tmp_path: Path) -> None:
    good = save_router(fitted_bundle, tmp_path / "router.skops")
    evil = _rewrite_schema(good, tmp_path / "evil.skops", lambda s: _replace_class(s, "LogisticRegression", "os", "system"))
    with pytest.raises(UserError, match=r"not trusted: \['os.system'\]"):
        load_router(evil)
    corrupt = tmp_path / "corrupt.skops"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="not a skops router file"):
        load_router(corrupt)
    text = tmp_path / "text.skops"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a skops router file"):
        load_router(text)
    with pytest.raises(UserError, match="not found"):
        load_router(tmp_path / "nowhere.skops")


def test_foreign_skops_files_are_refused(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    sio.dump(model, tmp_path / "plain.skops")
    with pytest.raises(UserError, match="not a ragroute router"):
        load_router(tmp_path / "plain.skops")
    sio.dump({"format": "something-else", "estimator": model}, tmp_path / "other.skops")
    with pytest.raises(UserError, match="not a ragroute router"):
        load_router(tmp_path / "other.skops")
    sio.dump({"format": "ragroute-router", "estimator": model, "threshold": 0.5, "metadata_json": "{}"},
             tmp_path / "bare.skops")
    with pytest.raises(UserError, match="not a scikit-learn Pipeline"):
        load_router(tmp_path / "bare.skops")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feature_version": 999}, "feature version 999"),
        ({"format_version": 0}, "format 0"),
        ({"versions": {"scikit-learn": "0.24.2"}}, "scikit-learn 0.24.2"),
    ],
)
def test_version_mismatch_is_a_clear_error(fitted_bundle: RouterBundle, tmp_path: Path, change, message) -> None:
    stale = RouterBundle(fitted_bundle.estimator, fitted_bundle.threshold, {**fitted_bundle.metadata, **change})
    path = save_router(stale, tmp_path / "stale.skops")
    with pytest.raises(UserError, match=message):
        load_router(path)


def test_tree_models_load_only_when_trusted(labelled, tmp_path: Path) -> None:
    from router.config import FeatureConfig, RouterConfig
    from router.fit import fit_router

    cfg = RouterConfig(
        model="gboost", cv_folds=3, param_grid={"n_estimators": [20], "max_depth": [2]},
        features=FeatureConfig(char_ngrams=[], max_features=300),
    )
    bundle = fit_router(labelled, cfg)
    path = save_router(bundle, tmp_path / "gboost.skops")
    with pytest.raises(UserError, match="--trust sklearn.tree._tree.Tree"):
        load_router(path)
    loaded = load_router(path, trusted=["sklearn.tree._tree.Tree"])
    np.testing.assert_array_equal(loaded.score(QUESTIONS, SIGNALS), bundle.score(QUESTIONS, SIGNALS))
