"""Merge the shard files of a sharded data_gen run (``--shard i/N`` on N workers) into one dataset."""

from __future__ import annotations

import re
from pathlib import Path

from ragroute.artifacts import RecordsRun, write_atomic
from ragroute.errors import UserError
from ragroute.records import JsonlWriter, iter_jsonl

SHARD_FILE = re.compile(r"records\.shard-(\d+)-of-(\d+)\.jsonl$")


def merge_shards(out: str | Path) -> dict:
    """Write ``records.jsonl`` and ``manifest.json`` from every shard in ``out``; refuses incomplete or mixed runs."""
    out = Path(out)
    shards = sorted((int(m[1]), int(m[2]), p) for p in out.glob("records.shard-*.jsonl") if (m := SHARD_FILE.search(p.name)))
    if not shards:
        raise UserError(f"no shard files (records.shard-I-of-N.jsonl) in {out}")
    counts = {n for _, n, _ in shards}
    if len(counts) != 1:
        raise UserError(f"{out} mixes runs with different shard counts: {sorted(counts)}")
    total = counts.pop()
    missing = sorted(set(range(total)) - {i for i, _, _ in shards})
    if missing:
        raise UserError(f"shards {missing} of {total} are missing in {out}")
    manifests = [RecordsRun.load(path, require_manifest=True).manifest for _, _, path in shards]
    hashes = {m.get("config_hash") for m in manifests}
    if len(hashes) != 1:
        raise UserError(f"the shards in {out} were made with different configs: {sorted(map(str, hashes))}")
    seen: set[str] = set()

    def merge(tmp: Path) -> None:
        with JsonlWriter(tmp, fsync=False) as writer:
            for _, _, path in shards:
                for record in iter_jsonl(path):
                    if record["id"] not in seen:
                        seen.add(record["id"])
                        writer.write(record)

    merged = RecordsRun(write_atomic(out / "records.jsonl", merge), out / "manifest.json", dict(manifests[0]))
    merged.manifest["shard"] = f"merged {total} shards"
    merged.manifest["counts"] = {
        "questions": sum(m["counts"]["questions"] for m in manifests),
        "records": len(seen),
        "problems": sum(m["counts"]["problems"] for m in manifests),
    }
    merged.save()
    return merged.counts
