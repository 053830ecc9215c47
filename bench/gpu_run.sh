#!/usr/bin/env bash
# The GPU benchmark runs of docs/benchmarks/gpu.md on a machine with two GPUs, in the repository root, with
# vLLM importable (GPU 0 and GPU 1 each run one process of bench/gpu_pipeline.py where the parts are
# independent). Writes part files and logs to $OUT (default ./gpu-out) and prints a summary.
#   bash bench/gpu_run.sh smoke      # every part at toy size (~3 min): catches breakage before measuring
#   bash bench/gpu_run.sh pipeline   # batch-1 rows: 7B teacher on GPU 0 | prefix cache, students, routed on GPU 1
#   bash bench/gpu_run.sh scale      # routed on two GPUs, data_gen single GPU vs data_parallel 2
#   bash bench/gpu_run.sh merge DIR  # the contract file from the part files in DIR
# The second session's runs (each part fits one 10-minute device call; docs/benchmarks/gpu.md):
#   bash bench/gpu_run.sh serve1     # GPU 0: serve, both models on one GPU, open-loop goodput sweep |
#                                    # GPU 1: routed share 0.3 on one GPU (n 40), then data_gen 256 @ 128 vs raw
#   bash bench/gpu_run.sh serve2     # both GPUs: serve, teacher GPU 0 + student GPU 1, open-loop goodput;
#                                    # then data_gen 2 shards of 256 (128 per GPU: weak scaling)
#   bash bench/gpu_run.sh routed2    # routed share 0.3 with teacher GPU 0, student GPU 1 (n 40)
# The third session's (CUDA MPS: the two engine processes of one card run their kernels at the same time):
#   bash bench/gpu_run.sh mps1       # GPU 0 under an MPS daemon: serve1's one-GPU goodput sweep |
#                                    # GPU 1 (no MPS): data_gen on all 500 dev questions vs raw, with wall-time split
#   CAP0=40 bash bench/gpu_run.sh mps1               # the same, the student's engine.vllm.mps_thread_percentage 40
set -uo pipefail
mode=${1:?smoke, pipeline, scale, serve1, serve2, routed2, mps1 or merge}
OUT=${OUT:-gpu-out}
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}  # JAX would take 75% of each GPU
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # worker processes (data_gen, serve) import this checkout
mkdir -p "$OUT/logs"
args=(--dense-model "${DENSE_MODEL:-/tmp/minilm}")
[ "$mode" = smoke ] && args=(--smoke --bm25-only)
[ "$mode" = pipeline ] && args+=(--n "${N_PIPELINE:-10}")
serve() {  # serve NAME GPUS_USED CUDA_VISIBLE SECONDS [ARGS...]: serve_load --mode gpu --open-loop, JSON after every level
  local name=$1 n=$2 gpus=$3 limit=$4; shift 4
  CUDA_VISIBLE_DEVICES=$gpus SERVE_LOAD_LOG="$OUT/logs/$name-server.log" timeout -s INT -k 30 "$limit" \
    python3 bench/serve_load.py --mode gpu --gpus "$n" --open-loop --dense-model "${DENSE_MODEL:-/tmp/minilm}" \
    --max-tokens 384 --level-s "${LEVEL_S:-15}" --rate-start "${RATE_START:-2}" --rate-factor "${RATE_FACTOR:-1.6}" \
    --refine "${REFINE:-2}" --json "$OUT/$name.json" "$@" > "$OUT/logs/$name.log" 2>&1 \
    || { echo "FAILED: $name (exit $?)"; tail -n 8 "$OUT/logs/$name.log"; }
  grep -E '^(teacher|router) ' "$OUT/logs/$name.log" | cut -c1-220
}
MPS=/tmp/ragroute-mps
mps_start() {  # mps_start GPUS: a CUDA MPS control daemon for those GPUs, its own pipe and log folders
  command -v nvidia-cuda-mps-control > /dev/null || { echo "no nvidia-cuda-mps-control on this machine" >&2; return 1; }
  mkdir -p "$MPS/pipe" "$MPS/log"
  CUDA_VISIBLE_DEVICES=$1 CUDA_MPS_PIPE_DIRECTORY=$MPS/pipe CUDA_MPS_LOG_DIRECTORY=$MPS/log nvidia-cuda-mps-control -d \
    || return 1
  # The server starts with the first client: one small CUDA client shows now whether MPS works on this machine.
  CUDA_VISIBLE_DEVICES=0 CUDA_MPS_PIPE_DIRECTORY=$MPS/pipe timeout 120 python3 -c \
    'import torch; x = torch.ones(1024, device="cuda"); print("MPS client ok:", float(x.sum()))' \
    || { echo "MPS client failed:"; tail -n 5 "$MPS"/log/*.log; mps_stop; return 1; }
}
mps_stop() {  # the daemon quits; its logs go with the others
  echo quit | CUDA_MPS_PIPE_DIRECTORY=$MPS/pipe nvidia-cuda-mps-control; sleep 2
  cp -r "$MPS/log" "$OUT/logs/mps" 2>/dev/null; rm -rf "$MPS/pipe"
}
run() {  # run NAME GPUS SECONDS ARGS...: one part (stopped after SECONDS; rows so far are kept), log in $OUT/logs
  local name=$1 gpus=$2 limit=$3; shift 3
  CUDA_VISIBLE_DEVICES=$gpus timeout -s INT -k 20 "$limit" python3 bench/gpu_pipeline.py "${args[@]}" "$@" --index-dir "/tmp/index-$name" \
    --out "$OUT/$name.json" \
    > "$OUT/logs/$name.log" 2>&1 || { echo "FAILED: $name (exit $?)"; tail -n 6 "$OUT/logs/$name.log"; }
  grep -E "engine up|Error|error:" "$OUT/logs/$name.log" | tail -n 8
}
case $mode in smoke|pipeline|scale|serve1|serve2|routed2|mps1|merge) ;; *) echo "unknown mode $mode" >&2; exit 2 ;; esac
if [ "$mode" = merge ]; then
  dir=${2:?part directory}
  exec python3 bench/gpu_pipeline.py --merge "$dir"/*.json --out bench/results/gpu_pipeline.json \
    --details bench/results/gpu_pipeline_details.json ${KEEP:+--keep "$KEEP"}
fi
if [ "$mode" = serve1 ]; then
  serve serve1 1 0 "${T_SERVE:-560}" &
  { run students 1 "${T_ROUTED:-360}" --part students --parts-students routed --shares 0.3 --n "${N_ROUTED:-40}"
    run datagen 1 "${T_DATAGEN:-170}" --part datagen --datagen-n 256 --batch-size 128; } &
  wait
elif [ "$mode" = serve2 ]; then
  serve serve2 2 0,1 "${T_SERVE:-400}"
  run datagen_s0 0 "${T_DATAGEN:-150}" --part datagen --datagen-n 256 --batch-size 128 --shard 0/2 &
  run datagen_s1 1 "${T_DATAGEN:-150}" --part datagen --datagen-n 256 --batch-size 128 --shard 1/2 &
  wait
elif [ "$mode" = routed2 ]; then
  run routed2 0,1 "${T_ROUTED2:-300}" --part routed2 --shares 0.3 --n "${N_ROUTED:-40}"
elif [ "$mode" = mps1 ]; then  # the one-GPU serve of serve1 under MPS | data_gen on all dev questions vs raw
  if mps_start 0; then
    ( export CUDA_MPS_PIPE_DIRECTORY=$MPS/pipe  # CAP0 set: the student capped at CAP0 % of the SMs
      serve serve1_mps${CAP0:+_cap$CAP0} 1 0 "${T_SERVE:-540}" ${CAP0:+--student-mps-percentage "$CAP0"} ) &
  fi
  run datagen_all 1 "${T_DATAGEN:-480}" --part datagen --datagen-n 500 --batch-size 128 --no-prefetch-too &
  wait; [ -d "$MPS/pipe" ] && mps_stop
fi
if [ "$mode" = serve1 ] || [ "$mode" = serve2 ] || [ "$mode" = routed2 ] || [ "$mode" = mps1 ]; then :
elif [ "$mode" != scale ]; then
  run teacher 0 "${T_PIPELINE:-550}" --part teacher & run students 1 "${T_PIPELINE:-550}" --part students & wait
fi
if [ "$mode" = smoke ] || [ "$mode" = scale ]; then
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
if d.get("mode") == "gpu":  # serve_load: goodput per model
    print(sys.argv[1], {k: v for k, v in d.items() if k.startswith("goodput") or k == "partial"}); sys.exit()
def walk(t, p):
    for k, v in t.items():
        if isinstance(v, dict) and "ragroute" not in v and "gen_p50_s" not in v: walk(v, p + k + "/")
        elif isinstance(v, dict): print(p + k, {x: round(y, 3) for x, y in (v.get("ragroute", v)).items() if isinstance(y, float) and "p50" in x})
        else: print(p + k, v if not isinstance(v, float) else round(v, 4))
walk(d["result"], d["part"] + ":")' "$f"
done
tar -czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"
