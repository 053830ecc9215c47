"""Merge the shard files of a sharded data_gen run (``--shard i/N`` on N workers) into one dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

from data_gen.manifest import write_json_atomic
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
    manifests = [json.loads((out / f"manifest.shard-{i}-of-{total}.json").read_text()) for i in range(total)]
    hashes = {m["config_hash"] for m in manifests}
    if len(hashes) != 1:
        raise UserError(f"the shards in {out} were made with different configs: {sorted(hashes)}")
    seen: set[str] = set()
    target = out / "records.jsonl"
    tmp = out / "records.jsonl.merging"
    tmp.unlink(missing_ok=True)
    with JsonlWriter(tmp, fsync=False) as writer:
        for _, _, path in shards:
            for record in iter_jsonl(path):
                if record["id"] not in seen:
                    seen.add(record["id"])
                    writer.write(record)
    tmp.replace(target)
    merged = dict(manifests[0])
    merged["shard"] = f"merged {total} shards"
    merged["counts"] = {
        "questions": sum(m["counts"]["questions"] for m in manifests),
        "records": len(seen),
        "problems": sum(m["counts"]["problems"] for m in manifests),
    }
    write_json_atomic(out / "manifest.json", merged)
    return merged["counts"]
