#!/usr/bin/env bash
# The GPU benchmark runs of docs/benchmarks/gpu.md on a machine with two GPUs, in the repository root, with
# vLLM importable (GPU 0 and GPU 1 each run one process of bench/gpu_pipeline.py where the parts are
# independent). Writes part files and logs to $OUT (default ./gpu-out) and prints a summary.
#   bash bench/gpu_run.sh smoke      # every part at toy size (~3 min): catches breakage before measuring
#   bash bench/gpu_run.sh pipeline   # batch-1 rows: 7B teacher on GPU 0 | prefix cache, students, routed on GPU 1
#   bash bench/gpu_run.sh scale      # routed on two GPUs, data_gen single GPU vs data_parallel 2
#   bash bench/gpu_run.sh merge DIR  # the contract file from the part files in DIR
set -uo pipefail
mode=${1:?smoke, pipeline, scale or merge}
OUT=${OUT:-gpu-out}
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}  # JAX would take 75% of each GPU
mkdir -p "$OUT/logs"
args=(--dense-model "${DENSE_MODEL:-/tmp/minilm}")
[ "$mode" = smoke ] && args=(--smoke --bm25-only)
[ "$mode" = pipeline ] && args+=(--n "${N_PIPELINE:-10}")
run() {  # run NAME GPUS SECONDS ARGS...: one part (stopped after SECONDS; rows so far are kept), log in $OUT/logs
  local name=$1 gpus=$2 limit=$3; shift 3
  CUDA_VISIBLE_DEVICES=$gpus timeout -s INT -k 20 "$limit" python3 bench/gpu_pipeline.py "${args[@]}" "$@" --index-dir "/tmp/index-$name" \
    --out "$OUT/$name.json" \
    > "$OUT/logs/$name.log" 2>&1 || { echo "FAILED: $name (exit $?)"; tail -n 6 "$OUT/logs/$name.log"; }
  grep -E "engine up|Error|error:" "$OUT/logs/$name.log" | tail -n 8
}
case $mode in smoke|pipeline|scale|merge) ;; *) echo "unknown mode $mode" >&2; exit 2 ;; esac
if [ "$mode" = merge ]; then
  dir=${2:?part directory}
  exec python3 bench/gpu_pipeline.py --merge "$dir"/*.json --out bench/results/gpu_pipeline.json \
    --details bench/results/gpu_pipeline_details.json
fi
if [ "$mode" != scale ]; then
  run teacher 0 "${T_PIPELINE:-550}" --part teacher & run students 1 "${T_PIPELINE:-550}" --part students & wait
fi
if [ "$mode" != pipeline ]; then
  run routed2 0,1 "${T_ROUTED2:-250}" --part routed2 --n "${N_ROUTED2:-8}"
  run datagen 0 "${T_DATAGEN:-170}" --part datagen --datagen-n "${N_DATAGEN:-128}" --batch-size 128
  [ "$mode" = smoke ] || {
  run datagen_s0 0 "${T_DATAGEN:-170}" --part datagen --datagen-n "${N_DATAGEN:-128}" --batch-size 128 --shard 0/2 &
  run datagen_s1 1 "${T_DATAGEN:-170}" --part datagen --datagen-n "${N_DATAGEN:-128}" --batch-size 128 --shard 1/2 &
  wait; }
fi
for f in "$OUT"/*.json; do  # one line per row: p50 generation / total, or the error
  python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
def walk(t, p):
    for k, v in t.items():
        if isinstance(v, dict) and "ragroute" not in v and "gen_p50_s" not in v: walk(v, p + k + "/")
        elif isinstance(v, dict): print(p + k, {x: round(y, 3) for x, y in (v.get("ragroute", v)).items() if isinstance(y, float) and "p50" in x})
        else: print(p + k, v if not isinstance(v, float) else round(v, 4))
walk(d["result"], d["part"] + ":")' "$f"
done
tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
