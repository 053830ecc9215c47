"""How fast one CPU core tokenizes abstracts for the index build's encoder (what one DataLoader worker of
``ragroute index build`` on a GPU does: a chunk of 16 batches sorted by length, MiniLM's fast tokenizer, 256
tokens, one thread). Bounds the build's GPU embedding rate at workers x this rate.

    taskset -c 1 python bench/tokenize_rate.py --dataset ragroute/data/pubmedqa/pqal_dev.json
"""

from __future__ import annotations

import argparse
import os
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ragroute/data/pubmedqa/pqal_dev.json")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from index.config import IndexConfig
    from index.embedder import BATCHES_PER_CALL, DocumentEmbedder
    from ragroute.rag.corpus import load_corpus

    torch.set_num_threads(1)
    embedder = DocumentEmbedder(IndexConfig(device="cpu", dense_batch_size=args.batch_size, dense_max_seq_length=256))
    texts = [d.text for d in load_corpus(args.dataset)]
    chunk = args.batch_size * BATCHES_PER_CALL
    texts = (texts * (chunk // len(texts) + 1))[:chunk]
    for _ in range(args.repeats):
        started = time.perf_counter()
        ordered = sorted(texts, key=len, reverse=True)
        for b in range(0, chunk, args.batch_size):
            dict(embedder.model.tokenize(ordered[b : b + args.batch_size]))
        seconds = time.perf_counter() - started
        print(f"tokenized {chunk} abstracts in {seconds:.2f} s: {chunk / seconds:.0f} per second on one core")


if __name__ == "__main__":
    main()
