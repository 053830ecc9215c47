#!/usr/bin/env bash
# ray.data.llm generation on GPUs against the local executor (issue 26 item 3), through ragroute's own CLI:
# the same dev questions answered by `ragroute data-gen` (local executor, one vLLM engine) and by
# `--executor ray --ray-generation ray-llm` (ray.data.llm's vLLM processor, REPLICAS replicas, one GPU each),
# shape-only Qwen2.5-7B, in one call; then a ray-llm run killed mid-way and rerun (nothing lost, nothing twice).
# Run in the repository root on a GPU machine with vLLM and Ray importable. Results: $OUT/ray_llm.json.
#   bash bench/gpu_ray_llm.sh smoke      # 8 questions through ray-llm only (catches breakage in ~2 min)
#   bash bench/gpu_ray_llm.sh compare    # N questions: local vs ray-llm, same records?
#   bash bench/gpu_ray_llm.sh resume     # ray-llm killed after KILL_AFTER s, rerun; all N ids once
set -uo pipefail
mode=${1:?smoke, compare or resume}
OUT=${OUT:-gpu-out}; N=${N:-500}; REPLICAS=${REPLICAS:-1}; KILL_AFTER=${KILL_AFTER:-150}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$OUT"
common=(--config configs/data_gen/qwen2.5-7b_pubmedqa_teacher_ray.yaml --model-config qwen2.5-7b-shape
        --questions ragroute/data/pubmedqa/pqal_dev.json --top-logprobs 0 --batch-size 128
        --pipeline.retriever bm25 --pipeline.reranker none --engine.gpu-memory-utilization 0.85)
datagen() {  # datagen NAME LIMIT EXTRA...: one CLI run, wall seconds appended to $OUT/walls.txt
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s.%N)
  python3 -m ragroute.cli data-gen "${common[@]}" --limit "$limit" --out "/tmp/rr/$name" "$@" \
    > "$OUT/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc wall_s=$(python3 -c "import time; print(round(time.time() - $t0, 1))")" | tee -a "$OUT/walls.txt"
  tail -n 3 "$OUT/$name.log"
}
summary() {  # summary NAME...: ids, fields and rates of each run's records
  python3 - "$OUT" "$@" <<'PY'
import json, sys
from ragroute.records import iter_jsonl
out, names = sys.argv[1], sys.argv[2:]
walls = dict(l.split()[0:3:2] for l in open(f"{out}/walls.txt")) if names else {}
rows = {}
for name in names:
    recs = list(iter_jsonl(f"/tmp/rr/{name}/records.jsonl"))
    ids = [r["id"] for r in recs]
    gen = sum(r["timings"].get("generation", 0.0) for r in recs)
    rows[name] = {"records": len(recs), "unique_ids": len(set(ids)), "fields": sorted(recs[0]) if recs else [],
                  "wall_s": float(walls.get(name, "wall_s=nan").split("=")[1]),
                  "completion_tokens": sum(r["completion_tokens"] for r in recs),
                  "doc_ids": {r["id"]: r["doc_ids"] for r in recs}, "generation_s_sum": round(gen, 2)}
    rows[name]["q_per_min_end_to_end"] = round(60 * len(recs) / rows[name]["wall_s"], 1)
if {"local", "ray"} <= set(rows):
    a, b = rows["local"], rows["ray"]
    rows["same_records"] = (a["fields"] == b["fields"] and set(a["doc_ids"]) == set(b["doc_ids"])
                            and a["doc_ids"] == b["doc_ids"] and a["completion_tokens"] == b["completion_tokens"])
for row in rows.values():
    if isinstance(row, dict):
        row.pop("doc_ids")
print(json.dumps(rows, indent=1))
json.dump(rows, open(f"{out}/ray_llm_{'_'.join(names)}.json", "w"), indent=1)
PY
}
rm -rf /tmp/rr; mkdir -p /tmp/rr; : > "$OUT/walls.txt"
case $mode in
  smoke) datagen ray 8 --executor ray --ray-generation ray-llm --ray-actors "$REPLICAS"; summary ray ;;
  compare)
    datagen local "$N"
    datagen ray "$N" --executor ray --ray-generation ray-llm --ray-actors "$REPLICAS"
    summary local ray ;;
  resume)
    timeout -s KILL "$KILL_AFTER" python3 -m ragroute.cli data-gen "${common[@]}" --limit "$N" --out /tmp/rr/resumed \
      --executor ray --ray-generation ray-llm --ray-actors "$REPLICAS" > "$OUT/resumed_killed.log" 2>&1
    echo "killed after ${KILL_AFTER}s with $(wc -l < /tmp/rr/resumed/records.jsonl) records written"
    python3 -m ray.scripts.scripts stop --force > /dev/null 2>&1; sleep 3
    datagen resumed "$N" --executor ray --ray-generation ray-llm --ray-actors "$REPLICAS"
    summary resumed ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
