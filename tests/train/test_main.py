"""Real short training runs on tiny random-init Llamas through ``train.main``: every loss learns, checkpoints
resume exactly, LoRA is merged into a servable model, bad input stops with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ragroute.config import load_config
from ragroute.errors import UserError
from train.config import TrainConfig
from train.main import main

from .conftest import demo_records, root_conftest, write_records

REPORT_KEYS = {"steps", "first_loss", "final_loss", "eval_loss", "tokens_per_s", "peak_memory_gb", "wall_s"}


def _config(tmp_path: Path, data: Path, student: Path, **overrides) -> TrainConfig:
    base = {
        "data": str(data),
        "output_dir": str(tmp_path / "run"),
        "student.model": str(student),
        "max_records": 4,  # one batch, seen every step: the loss must go down on it
        "eval_fraction": 0.0,
        "per_device_batch_size": 4,
        "max_steps": 4,
        "learning_rate": 1.0e-2,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "max_length": 256,
        "dtype": "float32",
        "save_steps": 100,
    }
    base.update(overrides)
    return load_config(TrainConfig, None, [f"{k}={v}" for k, v in base.items()])


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


LOSSES = [
    ("sft", {}),
    ("forward_kl", {"loss.sft_weight": 0.5, "learning_rate": 2.0e-3}),
    ("reverse_kl", {"learning_rate": 2.0e-3}),
    ("jsd", {"loss.beta": 0.5, "loss.temperature": 2.0, "learning_rate": 2.0e-3}),
]


@pytest.mark.parametrize(("loss", "extra"), LOSSES, ids=[name for name, _ in LOSSES])
def test_each_online_loss_learns_and_writes_a_servable_model(
    loss: str, extra: dict, tmp_path: Path, records_path: Path, tiny_student_dir: Path, tiny_model_dir: Path
):
    teacher = {} if loss == "sft" else {"teacher": str(tiny_model_dir)}
    cfg = _config(tmp_path, records_path, tiny_student_dir, **{"loss.name": loss, "max_steps": 3, **teacher, **extra})
    report = main(cfg)
    assert REPORT_KEYS <= report.keys() and report["steps"] == 3
    assert report["final_loss"] < report["first_loss"]
    assert report["tokens_per_s"] > 0 and report["peak_memory_gb"] > 0
    on_disk = json.loads((Path(cfg.output_dir) / "train_report.json").read_text())
    assert on_disk["final_loss"] == report["final_loss"]
    final = Path(report["final_model"])
    assert (final / "ragroute_model.json").exists() and (final / "chat_template.jinja").exists()
    before, after = _weights(tiny_student_dir), _weights(final)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_offline_topk_loss_trains_without_loading_a_teacher(
    tmp_path: Path, topk_records_path: Path, tiny_student_dir: Path
):
    cfg = _config(tmp_path, topk_records_path, tiny_student_dir, **{"loss.name": "topk_kl", "loss.sft_weight": 0.2})
    report = main(cfg)
    assert report["final_loss"] < report["first_loss"]
    assert report["data"]["with_teacher_topk"] == 4
    assert report["shared_vocab"] is None  # no teacher model was loaded


def test_kd_from_an_identical_teacher_starts_at_zero(tmp_path: Path, records_path: Path, tiny_model_dir: Path):
    cfg = _config(
        tmp_path, records_path, tiny_model_dir,
        # end_weight 0: only the KD term (the end-of-answer cross-entropy is not zero for any teacher)
        **{"loss.name": "forward_kl", "teacher": str(tiny_model_dir), "max_steps": 1, "loss.end_weight": 0.0},
    )
    report = main(cfg)
    assert report["first_loss"] == 0.0


def test_on_policy_steps_train_on_student_samples(
    tmp_path: Path, records_path: Path, tiny_student_dir: Path, tiny_model_dir: Path
):
    cfg = _config(
        tmp_path, records_path, tiny_student_dir,
        **{"loss.name": "jsd", "teacher": str(tiny_model_dir), "loss.on_policy_fraction": 1.0,
           "loss.max_new_tokens": 8, "max_steps": 2, "per_device_batch_size": 2},
    )
    report = main(cfg)
    assert report["steps"] == 2 and report["final_loss"] > 0
    before, after = _weights(tiny_student_dir), _weights(Path(report["final_model"]))
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_lora_adapters_are_merged_into_the_final_model(tmp_path: Path, records_path: Path, tiny_student_dir: Path):
    cfg = _config(tmp_path, records_path, tiny_student_dir, **{"lora.enabled": True, "lora.r": 4, "max_steps": 3})
    report = main(cfg)
    assert report["final_loss"] < report["first_loss"]
    final = Path(report["final_model"])
    before, after = _weights(tiny_student_dir), _weights(final)
    assert not any("lora" in key for key in after) and before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("proj" in k for k in changed)  # only adapted projections moved
    assert json.loads((final / "ragroute_model.json").read_text())["lora_merged"] is True


def test_resume_continues_the_step_count_and_the_loss(tmp_path: Path, records_path: Path, tiny_student_dir: Path):
    common = {"max_records": 16, "per_device_batch_size": 2, "save_steps": 2, "learning_rate": 1.0e-3}
    straight = main(_config(tmp_path / "a", records_path, tiny_student_dir, **common))
    interrupted_dir = tmp_path / "b"
    first = main(_config(interrupted_dir, records_path, tiny_student_dir, **{**common, "max_steps": 2}))
    assert first["steps"] == 2
    resumed = main(
        _config(interrupted_dir, records_path, tiny_student_dir, **{**common, "resume": True})
    )
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert resumed["steps"] == 4
    # The history before the checkpoint comes back from it; steps 3 and 4 are new and match the straight run.
    assert [step for step, _ in resumed["loss_history"]] == [1, 2, 3, 4]
    assert resumed["train_tokens"] < straight["train_tokens"]  # only steps 3-4 were computed this time
    for (step, loss), (_, expected) in zip(resumed["loss_history"], straight["loss_history"], strict=True):
        assert loss == pytest.approx(expected, rel=1e-5), step


def test_depth_pruning_on_the_fly(tmp_path: Path, records_path: Path, teacher_dir: Path):
    four_layers = root_conftest().make_tiny_llama(tmp_path / "tiny4", teacher_dir, num_layers=4, seed=2)
    cfg = _config(tmp_path, records_path, four_layers, **{"student.prune_layers": 2, "max_steps": 1})
    report = main(cfg)
    assert report["student"]["layers_before"] == 4 and report["student"]["layers"] == 2
    config = json.loads((Path(report["final_model"]) / "config.json").read_text())
    assert config["num_hidden_layers"] == 2


def test_bad_input_is_a_clear_error(tmp_path: Path, records_path: Path, tiny_student_dir: Path):
    no_answers = [r for r in demo_records(3)]
    for r in no_answers:
        r.answer = ""
    empty = write_records(tmp_path / "no_answers.jsonl", no_answers)
    with pytest.raises(UserError, match="3 without an answer"):
        main(_config(tmp_path, empty, tiny_student_dir))
    with pytest.raises(UserError, match="needs records with top_logprobs"):
        main(_config(tmp_path, records_path, tiny_student_dir, **{"loss.name": "topk_kl"}))
    with pytest.raises(UserError, match="not found"):
        main(_config(tmp_path, tmp_path / "missing.jsonl", tiny_student_dir))


def test_cli_rejects_unknown_loss_and_keys_with_exit_code_2(tmp_path: Path, capsys, records_path: Path):
    from ragroute.cli import main as ragroute_main

    assert ragroute_main(["train", "--data", str(records_path), "--loss.name", "kl_magic"]) == 2
    assert "unknown loss 'kl_magic'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  nmae: sft\n")
    assert ragroute_main(["train", "--config", str(bad)]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert ragroute_main(["train", "--loss.name", "jsd"]) == 2
    assert "needs an online teacher" in capsys.readouterr().err
