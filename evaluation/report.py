"""metrics.json, report.md and the plots of an evaluation run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STAGE_ORDER = ("retrieval", "rerank", "filter", "prompt", "router", "generation")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_ci(metrics: dict, key: str) -> str:
    ci = metrics.get("ci95", {}).get(key)
    base = _fmt(metrics.get(key))
    return f"{base} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else base


def plot_latency(systems: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(systems)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4))
    bottom = [0.0] * len(names)
    for stage in STAGE_ORDER:
        values = [(systems[n].get("stages", {}).get(stage) or {}).get("p50_s") or 0.0 for n in names]
        if any(values):
            ax.bar(names, values, bottom=bottom, label=stage)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("seconds per question, single-stream (p50 of each stage)")
    ax.set_title("Latency breakdown")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_quality_vs_share(curve: list[dict], systems: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if curve:
        ax.plot([p["teacher_share"] for p in curve], [p["accuracy"] for p in curve], marker=".", label="router sweep")
        ends = (curve[0]["accuracy"], curve[-1]["accuracy"])
        ax.plot([0, 1], ends, linestyle="--", color="grey", label="random routing")
    for name, m in systems.items():
        if m.get("teacher_share") is not None and m.get("accuracy") is not None:
            ax.scatter([m["teacher_share"]], [m["accuracy"]], zorder=3)
            ax.annotate(name, (m["teacher_share"], m["accuracy"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("share of questions sent to the teacher")
    ax.set_ylabel("decision accuracy")
    ax.set_title("Quality vs teacher calls")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, result: dict[str, Any]) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "report": out / "report.md",
             "latency_plot": out / "latency_breakdown.png", "quality_plot": out / "quality_vs_teacher_share.png"}
    paths["metrics"].write_text(json.dumps(result, indent=2, default=float))
    systems = result["systems"]
    plot_latency(systems, paths["latency_plot"])
    plot_quality_vs_share(result.get("curve", []), systems, paths["quality_plot"])
    lines = [
        "# ragroute evaluation",
        "",
        f"Dataset: `{result['dataset']}` ({result['n']} questions). Teacher `{result['teacher']}`, "
        f"student `{result['student']}`, router `{result.get('router')}`. Retrieved over "
        f"{result.get('corpus', 'the configured corpus')}.",
        "",
        "| system | accuracy [95% CI] | macro-F1 [95% CI] | ROUGE-L [95% CI] | cited answer valid | own citations "
        "valid | own abstract cited | verdict | answer tokens | teacher share |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in systems.items():
        lines.append(
            f"| {name} | {_with_ci(m, 'accuracy')} | {_with_ci(m, 'macro_f1')} | {_with_ci(m, 'rouge_l')} | "
            f"{_fmt(m.get('cited_answer_valid'))} | {_fmt(m['citation_valid'])} | {_fmt(m['own_abstract_cited'])} | "
            f"{_fmt(m.get('verdict_present'), 2)} | {_fmt(m['answer_tokens_mean'], 1)} | {_fmt(m['teacher_share'], 2)} |"
        )
    lines += ["", "Cited answer: the `cited_answer` returned to users (the model's own `[i]` markers, else each "
              "sentence attributed to its best-supporting passage), valid when it cites and every marker names a "
              "retrieved passage. Own citations: the model's own markers in `answer` only."]
    lines += [
        "", "## Latency and throughput", "",
        f"Single-stream: {result.get('latency_sample', 0)} sampled questions answered one at a time (batch 1), "
        "what one user waits. Batched: the throughput of the batched answering that produced the scored answers.",
        "", "| system | gen p50 s | gen p95 s | total p50 s | total p95 s | TTFT p50 s | tokens/s (1 stream) "
        "| batched q/min |", "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in systems.items():
        lines.append(
            f"| {name} | {_fmt(m['gen_latency_p50_s'], 2)} | {_fmt(m['gen_latency_p95_s'], 2)} | "
            f"{_fmt(m['total_latency_p50_s'], 2)} | {_fmt(m['total_latency_p95_s'], 2)} | {_fmt(m.get('ttft_p50_s'), 3)} | "
            f"{_fmt(m['output_tokens_per_s'], 1)} | {_fmt(m.get('batch_q_per_min'), 1)} |"
        )
    lines += ["", "## Latency per stage, single-stream (p50 / p95 seconds)", "",
              "| system | " + " | ".join(STAGE_ORDER) + " |", "|---|" + "---|" * len(STAGE_ORDER)]
    for name, m in systems.items():
        cells = []
        for stage in STAGE_ORDER:
            s = m.get("stages", {}).get(stage)
            cells.append(f"{s['p50_s']:.4f} / {s['p95_s']:.4f}" if s else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result.get("routed_vs_teacher_latency_ratio") is not None:
        lines += ["", "Routed vs teacher-only total latency (single-stream p50): "
                  f"**{result['routed_vs_teacher_latency_ratio']:.2f}x**."]
    lines += ["", "Notes:"] + [f"- {note}" for note in result.get("notes", [])]
    lines += ["", "![latency](latency_breakdown.png)", "", "![quality vs teacher share](quality_vs_teacher_share.png)", ""]
    paths["report"].write_text("\n".join(lines))
    return paths
