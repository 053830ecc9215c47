#!/usr/bin/env bash
# ragroute's own index build on a GPU (issue 21): `ragroute corpus build` of DOCS synthetic abstracts, then
# `ragroute index build` (embedding shards on cuda in fp16, the FAISS IVF-PQ fill, and the tantivy index built at
# the same time in a second process) with encoders of the all-MiniLM-L6-v2 shape and of the BERT-base shape
# (MedCPT's article encoder), random weights: the rate of a transformer forward pass does not depend on its
# weights. Peer in the same call: the bare encoder's forward pass on pre-tokenized 256-token batches (what the
# issue's 28,500 / 8,500 documents/s measure), and with BASELINE_S=60 ragroute without tokenizing workers.
# Docs/s from the build's own log; results to $OUT.
#   DOCS=400000 bash bench/gpu_index_build.sh
# STEP_S caps each build (its log still comes back); SHAPES picks the encoders built (default both).
# Needs (the device image lacks them): faiss-cpu, tantivy wheels on PYTHONPATH; the MiniLM tokenizer files in
# $TOKENIZER_DIR (vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json).
set -uo pipefail
OUT=${OUT:-gpu-out}; DOCS=${DOCS:-400000}; TOKENIZER_DIR=${TOKENIZER_DIR:?folder of the MiniLM tokenizer files}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
rm -rf /tmp/rrg  # a warm device keeps it between calls: the store and indexes must be built anew
mkdir -p "$OUT" /tmp/rrg
python3 - "$TOKENIZER_DIR" "$DOCS" <<'PY'
import json, shutil, sys
from pathlib import Path
import numpy as np
from transformers import BertConfig, BertModel
tok, n_docs = Path(sys.argv[1]), int(sys.argv[2])
shapes = {"minilm-shape": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
          "bert-base-shape": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)}
for name, dims in shapes.items():
    out = Path("/tmp/rrg") / name
    BertModel(BertConfig(vocab_size=30522, max_position_embeddings=512, **dims)).save_pretrained(out)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tok / f, out / f)
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": dims["hidden_size"],
                                                               "pooling_mode_mean_tokens": True}))
# Synthetic abstracts: words of the real dev abstracts, shuffled, at their lengths (~1,400 characters).
dev = json.load(open("ragroute/data/pubmedqa/pqal_dev.json"))
texts = [" ".join(v["CONTEXTS"]).split() for v in dev.values()]
rng = np.random.default_rng(0)
vocab = np.array([w for t in texts for w in t])
lengths = np.array([len(t) for t in texts])
with open("/tmp/rrg/docs.jsonl", "w") as fh:
    for i in range(n_docs):
        words = vocab[rng.integers(0, len(vocab), size=int(lengths[i % len(lengths)]))]
        fh.write(json.dumps({"id": f"s{i}", "title": "", "text": " ".join(words)}) + "\n")
PY
python3 - <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
# Peer: the bare encoder, fp16, batch 512 x 256 tokens already on the GPU (no tokenizing, no copies).
import time
import torch
from transformers import BertModel
for name in ("minilm-shape", "bert-base-shape"):
    model = BertModel.from_pretrained(f"/tmp/rrg/{name}").half().cuda().eval()
    ids = torch.randint(1000, 30000, (512, 256), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for i in range(43):
            if i == 3:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            model(input_ids=ids, attention_mask=mask).last_hidden_state.mean(1)
        torch.cuda.synchronize()
    print(f"peer bare forward {name}: {40 * 512 / (time.perf_counter() - t0):.0f} documents/s")
PY
t0=$(date +%s)
python3 -m ragroute.cli corpus build --input /tmp/rrg/docs.jsonl --out /tmp/rrg/store > "$OUT/corpus_build.log" 2>&1
echo "corpus build rc=$? s=$(( $(date +%s) - t0 ))" | tee -a "$OUT/summary.txt"
run_build() {  # name, then extra index build options
  local name=$1; shift; t0=$(date +%s)
  timeout "${STEP_S:-600}" python3 -m ragroute.cli index build --store /tmp/rrg/store --out "/tmp/rrg/index-$name" \
    --dense-model "/tmp/rrg/${name%%.*}" --dense-batch-size "${BATCH:-512}" --dense-max-seq-length 256 \
    --device "${DEVICE:-cuda}" "$@" > "$OUT/index_$name.log" 2>&1
  echo "index build $name $* rc=$? s=$(( $(date +%s) - t0 ))" | tee -a "$OUT/summary.txt"
  grep -E "docs/s|embedded|tokenizing workers|trained|sparse index|Error" "$OUT/index_$name.log" | tail -n 8 | tee -a "$OUT/summary.txt"
}
# The old path (sentence-transformers in the build process, no tokenizing workers) for BASELINE_S seconds: its
# progress line every 30 s gives the rate (0: skipped).
if [ "${BASELINE_S:-0}" -gt 0 ]; then
  timeout "$BASELINE_S" python3 -m ragroute.cli index build --store /tmp/rrg/store --out /tmp/rrg/index-one --sparse false \
    --dense-model /tmp/rrg/minilm-shape --dense-batch-size "${BATCH:-512}" --dense-max-seq-length 256 \
    --device "${DEVICE:-cuda}" --dense-workers 0 > "$OUT/index_no_workers.log" 2>&1
  echo "no tokenizing workers (stopped at $BASELINE_S s):" | tee -a "$OUT/summary.txt"
  grep -E "docs/s" "$OUT/index_no_workers.log" | tail -n 2 | tee -a "$OUT/summary.txt"
fi
# The whole build as configs/index/pubmed-ivfpq.yaml runs it: sparse + dense at once, auto encoder processes.
SHAPES=" ${SHAPES:-minilm-shape bert-base-shape} "
case $SHAPES in *" minilm-shape "*)
  run_build minilm-shape --config configs/index/pubmed-ivfpq.yaml;; esac
case $SHAPES in *" bert-base-shape "*)
  run_build bert-base-shape --config configs/index/pubmed-ivfpq.yaml --sparse false --factory Flat;; esac
nvidia-smi --query-gpu=name,memory.used --format=csv | tee -a "$OUT/summary.txt"
