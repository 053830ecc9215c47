"""``ragroute verdict calibrate``: fit the verdict offsets of verdict-first records by cross-validation.

    ragroute verdict calibrate --records runs/pqal/teacher --out runs/pqal/teacher_verdict.yaml
    ragroute verdict calibrate --records runs/pqal/teacher --cross-fit-out runs/pqal/teacher_xfit

The offsets are chosen for accuracy against the records' gold verdicts (PubMedQA ``final_decision``); the reported
accuracy is cross-validated (each fold's verdicts under offsets fitted on the other folds). ``--out`` writes the
offsets fitted on all records as a ``sampling: verdict:`` YAML block for a data_gen config (the system spec
carries it to train, router, eval and serve). ``--cross-fit-out``
writes the records with each verdict re-chosen out-of-fold (``verdict`` and the answer's opening word; the
explanation is the one the model wrote after its own verdict), for router evaluation without tuning on the
evaluated questions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path

from ragroute.errors import UserError


def _gold_records(path: str) -> list:
    from ragroute.records import read_records

    if not Path(path).exists():
        raise UserError(f"records not found: {path}")
    records = read_records(path)
    usable = [r for r in records if r.verdict_probs and r.gold_decision in ("yes", "no", "maybe")]
    if len(usable) < 10:
        raise UserError(f"{path}: {len(usable)} records have verdict_probs and a gold verdict; at least 10 are needed "
                        "(generate with sampling.verdict.enabled: true on a dataset with gold verdicts)")
    return usable


def rewrite_verdict(record, verdict: str):  # noqa: ANN001, ANN201 - AnswerRecord in and out
    """The record with another verdict: the field, and the answer's opening ``Yes.``/``No.``/``Maybe.``."""
    from ragroute.verdict import prefix_text

    old = prefix_text(record.verdict) if record.verdict else ""
    answer = record.answer
    if old and answer.startswith(old):
        answer = prefix_text(verdict) + answer[len(old):]
    return dataclasses.replace(record, verdict=verdict, answer=answer)


def calibrate(
    records_path: str, folds: int, seed: int, out: str | None, cross_fit_out: str | None, objective: str = "log_loss"
) -> dict:
    import yaml

    from ragroute.records import JsonlWriter
    from ragroute.verdict import choose, cross_fitted_verdicts, fit_bias

    records = _gold_records(records_path)
    probs = [r.verdict_probs for r in records]
    gold = [r.gold_decision for r in records]
    xfit, _ = cross_fitted_verdicts(probs, gold, folds, seed, objective)
    raw = [choose(p, {}) for p in probs]
    bias = fit_bias(probs, gold, objective)
    accuracy = lambda verdicts: sum(v == g for v, g in zip(verdicts, gold, strict=True)) / len(gold)  # noqa: E731
    report = {
        "records": records_path, "n": len(records), "folds": folds, "objective": objective,
        "majority_rate": Counter(gold).most_common(1)[0][1] / len(gold),
        "accuracy_raw": accuracy(raw), "accuracy_cross_validated": accuracy(xfit),
        "verdicts_raw": dict(Counter(raw)), "verdicts_cross_validated": dict(Counter(xfit)),
        "bias_fitted_on_all": bias,
    }
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(yaml.safe_dump({"sampling": {"verdict": {"enabled": True, "bias": bias}}}, sort_keys=False))
    if cross_fit_out:
        target = Path(cross_fit_out) / "records.jsonl"
        target.unlink(missing_ok=True)
        with JsonlWriter(target, fsync=False) as writer:
            for record, verdict in zip(records, xfit, strict=True):
                writer.write(rewrite_verdict(record, verdict))
        (Path(cross_fit_out) / "calibration.json").write_text(json.dumps(report, indent=2))
    return report


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ragroute verdict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    cal = sub.add_parser("calibrate", help="fit verdict offsets by cross-validation; report the accuracy")
    cal.add_argument("--records", required=True, help="verdict-first data_gen records (JSONL or directory)")
    cal.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    cal.add_argument("--seed", type=int, default=0, help="seed of the fold split")
    cal.add_argument("--objective", choices=("log_loss", "accuracy", "select"), default="log_loss",
                     help="fit the offsets for calibrated probabilities (log_loss, default), for accuracy, or select "
                     "(nested cross-validation picks none, log_loss or accuracy)")
    cal.add_argument("--out", help="write the offsets fitted on all records as a `sampling: verdict:` YAML block")
    cal.add_argument("--cross-fit-out", help="directory for the records with out-of-fold verdicts")
    args = parser.parse_args(argv)
    if args.folds < 2:
        raise UserError(f"--folds must be >= 2, not {args.folds}")
    print(json.dumps(calibrate(args.records, args.folds, args.seed, args.out, args.cross_fit_out, args.objective), indent=2))
    return 0
