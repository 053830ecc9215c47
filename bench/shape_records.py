"""Teacher records for timing the train stage on shape-only models (no weights, no retrieval models, no GPU).

What a shape-only teacher's data_gen run writes, built in a second on any machine: PubMedQA dev questions, each
with a V3.1-style prompt made by ragroute's own prompt builder (``ragroute.rag.prompt.build_messages``, the
pipeline's default instruction and template, ``--docs`` abstracts of ``--max-chars`` characters: the question's
own abstract and the ones after it in the dev file, so no retriever is needed), and an answer of ``--answer-tokens``
random token ids of Qwen's ordinary vocabulary (``answer_token_ids``; no text, ``shape_only: true``).
With a train ``max_length`` below prompt + answer every example is cut to exactly ``max_length`` tokens, so each
step trains on a fixed sequence length. Losses on these records mean nothing.

  python bench/shape_records.py --out runs/shape/records.jsonl --n 128
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Qwen2.5's tokenizer (the shape configs' own, qwen2.5-tokenizer): ids below 151643 are ordinary BPE tokens; >= 100 skips
# the single bytes.
STAND_IN_VOCAB = 151643


def shape_records(n: int, docs: int, max_chars: int, answer_tokens: int, seed: int = 0) -> list:
    from ragroute.config import shared_pubmedqa_dev
    from ragroute.rag.config import PipelineConfig
    from ragroute.rag.corpus import Document
    from ragroute.rag.prompt import build_messages
    from ragroute.records import AnswerRecord

    dev = json.loads(Path(shared_pubmedqa_dev()).read_text())
    ids = list(dev)
    abstracts = [Document(id=i, title="", text=" ".join(dev[i]["CONTEXTS"])) for i in ids]
    pipeline = PipelineConfig()
    rng = random.Random(seed)
    records = []
    for q in range(n):
        pmid = ids[q % len(ids)]
        context = [abstracts[(q + j) % len(ids)] for j in range(docs)]
        messages = build_messages(
            dev[pmid]["QUESTION"], context, pipeline.instruction, pipeline.template, max_chars,
            pipeline.instruction_as_system,
        )
        answer = [rng.randrange(100, STAND_IN_VOCAB) for _ in range(answer_tokens)]
        records.append(AnswerRecord(
            id=f"{pmid}-{q}", question=dev[pmid]["QUESTION"], answer="", model="shape-only-teacher",
            messages=messages, doc_ids=[d.id for d in context], completion_tokens=answer_tokens,
            answer_token_ids=answer, shape_only=True,
        ))
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="records.jsonl to write")
    parser.add_argument("--n", type=int, default=128, help="records (questions repeat past the 500 dev questions)")
    parser.add_argument("--docs", type=int, default=7, help="abstracts per prompt (~200 tokens each at 800 chars)")
    parser.add_argument("--max-chars", type=int, default=800, help="characters per abstract")
    parser.add_argument("--answer-tokens", type=int, default=1024, help="random answer token ids per record")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from ragroute.records import JsonlWriter

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with JsonlWriter(out, fsync=False) as writer:
        for record in shape_records(args.n, args.docs, args.max_chars, args.answer_tokens, args.seed):
            writer.write(record)
    print(f"{args.n} shape-only records -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
