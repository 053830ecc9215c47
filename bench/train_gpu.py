"""GPU training benchmark of the train stage on Qwen-shaped random-init models (no weights needed).

Measures, in one process per GPU, through the same ``train.trainer.build_trainer`` path ``ragroute train`` uses:

* the card's bf16 matmul rate (8192^3, median of 10 after warm-up): the MFU denominator;
* SFT of a Qwen2.5-1.5B-shaped student (fp32 master weights, bf16 autocast, seq 2048 = 1536 prompt + 512 answer
  tokens): tokens/s and MFU;
* logit KD (JSD, beta 0.5) with an online Qwen2.5-7B-shaped teacher (152064 padded vocab rows): MFU counting the
  teacher's forward too, peak memory, and TRL's GKDTrainer (its full-logit generalized JSD, lmbda=0 so no sampling)
  on the same batches: step-time ratio and peak memory;
* offline top-k KD (k=20 stored logprobs): step time relative to SFT;
* ``--ddp``: the SFT (and KD) step under DDP on every visible GPU (``accelerate launch --multi_gpu``).

Model FLOPs counted (causal attention counted at half, as FlashAttention does):
  student: 6 * (decoder matmul params) * all tokens + 6 * V * d * answer tokens (only answer positions are projected)
           + 6 * L * d * T per token of attention;
  teacher (KD): 2 * (decoder matmul params) * all tokens + 2 * V * d * answer tokens + 2 * L * d * T per token.

Usage (on the GPU machine; bench/results/train_gpu.json is written, or --out):
  python bench/train_gpu.py --out results.json
  python bench/train_gpu.py --only sft --batch 4 --accum 2 --liger --out liger.json   # Liger kernels
  accelerate launch --multi_gpu --num_processes 2 bench/train_gpu.py --ddp --out ddp.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SEQ, ANSWER, TOPK = 2048, 512, 20
QWEN_1_5B = dict(
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=151936,
    tie_word_embeddings=True,
)
QWEN_7B = dict(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    tie_word_embeddings=False,
)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else 0.0


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def matmul_tflops(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / sorted(times)[len(times) // 2] / 1e12


def layer_matmul_params(shape: dict) -> int:
    d, i = shape["hidden_size"], shape["intermediate_size"]
    kv = d // shape["num_attention_heads"] * shape["num_key_value_heads"]
    return shape["num_hidden_layers"] * (2 * d * d + 2 * d * kv + 3 * d * i)


def flops_per_sequence(shape: dict, passes: int) -> float:
    """passes=6 for a trained model (fwd + bwd), 2 for a forward-only teacher."""
    d, layers = shape["hidden_size"], shape["num_hidden_layers"]
    body = passes * layer_matmul_params(shape) * SEQ
    head = passes * shape["vocab_size"] * d * ANSWER
    attention = passes * layers * d * SEQ * SEQ  # QK^T and AV: 4*T^2*d per layer forward, halved (causal)
    return body + head + attention


def make_model(shape: dict, dtype: torch.dtype, device: torch.device):
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        **shape, max_position_embeddings=32768, rope_theta=1e6, dtype=str(dtype).removeprefix("torch.")
    )
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    return model


def examples(n: int, tokenizer_vocab: int, topk: bool):
    from train.data import Example

    rng = random.Random(0)
    out = []
    for i in range(n):
        ids = [rng.randrange(100, tokenizer_vocab) for _ in range(SEQ)]
        labels = [-100] * (SEQ - ANSWER) + ids[SEQ - ANSWER :]
        ex = Example(id=str(i), input_ids=ids, labels=labels)
        if topk:
            ex.topk_ids = [[rng.randrange(100, tokenizer_vocab) for _ in range(TOPK)] for _ in range(ANSWER)]
            ex.topk_logprobs = [
                sorted((-rng.random() * 8 for _ in range(TOPK)), reverse=True) for _ in range(ANSWER)
            ]
        out.append(ex)
    return out


def run(kind: str, args, tokenizer, device, teacher=None) -> dict:
    from ragroute.config import load_config
    from train.config import TrainConfig
    from train.data import to_dataset
    from train.losses import make_kd_loss
    from train.report import StepTimer
    from train.trainer import build_trainer

    loss = {"sft": "sft", "kd": "jsd", "topk": "topk_kl"}[kind]
    overrides = [
        f"output_dir=/tmp/bench-train-{kind}",
        f"loss.name={loss}",
        "loss.beta=0.5",
        "loss.sft_weight=0.0",
        f"per_device_batch_size={args.batch}",
        f"gradient_accumulation_steps={args.accum}",
        f"max_steps={args.steps}",
        "save_steps=100000",
        "logging_steps=1",
        "eval_fraction=0.0",
        f"max_length={SEQ}",
        "dtype=bfloat16",
        "lr_scheduler=constant",
        "warmup_ratio=0.0",
        "learning_rate=1e-5",
        "teacher=bench-teacher",
        f"use_liger_kernel={str(args.liger).lower()}",
        f"torch_compile={str(args.compile).lower()}",
    ]
    cfg = load_config(TrainConfig, None, overrides)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    n_examples = args.batch * args.accum * world * (args.steps + 1)
    dataset = to_dataset(examples(n_examples, len(tokenizer), kind == "topk"), with_topk=kind == "topk")
    student = make_model(QWEN_1_5B, torch.float32, device)
    timer = StepTimer()
    _reset_peak()
    trainer = build_trainer(
        cfg,
        student,
        tokenizer,
        dataset,
        None,
        make_kd_loss(cfg.loss),
        teacher if kind == "kd" else None,
        "bfloat16",
        [timer],
    )
    trainer.train()
    return _summary(kind, timer, args, world, teacher is not None and kind == "kd", trainer)


def run_gkd(args, tokenizer, device, teacher) -> dict:
    """TRL's GKDTrainer (experimental) with its defaults except lmbda=0 (no on-policy sampling), same batches."""
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from train.data import to_dataset
    from train.report import StepTimer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dataset = to_dataset(
        examples(args.batch * args.accum * world * (args.steps + 1), len(tokenizer), False), False
    )
    gkd_args = GKDConfig(
        output_dir="/tmp/bench-train-gkd",
        lmbda=0.0,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=args.accum,
        max_steps=args.steps,
        bf16=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        max_length=SEQ,
        use_cpu=not torch.cuda.is_available(),
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch",
        disable_tqdm=True,
        gradient_checkpointing=False,
    )
    student = make_model(QWEN_1_5B, torch.float32, device)
    timer = StepTimer()
    _reset_peak()
    trainer = GKDTrainer(
        model=student,
        teacher_model=teacher,
        args=gkd_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id),
        callbacks=[timer],
    )
    trainer.train()
    return _summary("gkd", timer, args, world, True, trainer)


def _summary(kind: str, timer, args, world: int, with_teacher: bool, trainer) -> dict:
    steady = sorted(timer.step_s[2:] or timer.step_s)
    step_s = steady[len(steady) // 2]
    seqs = args.batch * args.accum * world
    flops = seqs * flops_per_sequence(QWEN_1_5B, 6)
    if with_teacher:
        flops += seqs * flops_per_sequence(QWEN_7B, 2)
    out = {
        "kind": kind,
        "world_size": world,
        "median_step_s": step_s,
        "step_s": timer.step_s,
        "tokens_per_s": seqs * SEQ / step_s,
        "model_tflop_per_step": flops / 1e12,
        "achieved_tflops_per_gpu": flops / step_s / world / 1e12,
        "peak_memory_gb": _peak_gb(),
        "final_loss": trainer.state.log_history[-2].get("loss")
        if len(trainer.state.log_history) > 1
        else None,
    }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "train_gpu.json"))
    parser.add_argument("--tokenizer", default=str(REPO / ".bench_assets" / "tokenizer"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--accum", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--ddp", action="store_true", help="multi-GPU run under accelerate launch")
    parser.add_argument("--only", default="sft,topk,kd,gkd", help="parts to run")
    parser.add_argument("--baseline", help="single-GPU results JSON: adds ddp2_scaling to a --ddp run")
    parser.add_argument(
        "--liger", action="store_true", help="use_liger_kernel: Liger RMSNorm/RoPE/SwiGLU kernels (needs liger-kernel)"
    )
    parser.add_argument("--compile", action="store_true", help="torch_compile: torch.compile the student (inductor)")
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke run with toy shapes (checks the code only)"
    )
    args = parser.parse_args()
    if args.tiny:
        global SEQ, ANSWER
        SEQ, ANSWER = 64, 16
        for shape in (QWEN_1_5B, QWEN_7B):
            shape.update(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            )

    from transformers import AutoTokenizer

    torch.backends.cuda.matmul.allow_tf32 = True
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.tiny:
        device = torch.device("cpu")
    else:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    results: dict = {
        "device": "cpu (tiny smoke)" if args.tiny else torch.cuda.get_device_name(device),
        "gpus": torch.cuda.device_count(),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "batch": args.batch,
        "accum": args.accum,
        "liger": args.liger,
        "torch_compile": args.compile,
        "seq": SEQ,
        "answer_tokens": ANSWER,
    }
    results["matmul_bf16_tflops"] = 1.0 if args.tiny else matmul_tflops()
    parts = args.only.split(",")
    runs: dict = {}
    teacher = None
    for part in parts:
        try:
            if part in ("kd", "gkd") and teacher is None:
                teacher = make_model(QWEN_7B, torch.bfloat16, device).eval().requires_grad_(False)
            if part == "gkd":
                try:
                    runs[part] = run_gkd(args, tokenizer, device, teacher)
                except ValueError as exc:  # TRL refuses the 152064-row teacher: rerun on an unpadded twin
                    if "vocab_size" not in str(exc):
                        raise
                    results["trl_gkd_padded_vocab_error"] = str(exc).split(".")[0]
                    teacher = None
                    _free()
                    teacher = make_model(
                        {**QWEN_7B, "vocab_size": QWEN_1_5B["vocab_size"]}, torch.bfloat16, device
                    )
                    teacher.eval().requires_grad_(False)
                    runs[part] = run_gkd(args, tokenizer, device, teacher)
            else:
                runs[part] = run(part, args, tokenizer, device, teacher)
        except torch.cuda.OutOfMemoryError as exc:
            runs[part] = {"error": f"OOM: {str(exc).splitlines()[0]}"}
        except Exception as exc:  # one broken part must not lose the others' numbers
            import traceback

            traceback.print_exc()
            runs[part] = {"error": f"{type(exc).__name__}: {exc}"}
        _free()
        if local_rank == 0:
            print(json.dumps({part: runs[part]}, default=str), flush=True)
    results["runs"] = runs
    peak = results["matmul_bf16_tflops"]

    def ok(name: str) -> dict | None:
        return runs.get(name) if runs.get(name) and "error" not in runs[name] else None

    if ok("sft"):
        results["sft_tokens_per_s"] = runs["sft"]["tokens_per_s"]
        results["sft_mfu"] = runs["sft"]["achieved_tflops_per_gpu"] / peak
    if ok("kd"):
        results["kd_online_mfu"] = runs["kd"]["achieved_tflops_per_gpu"] / peak
        results["kd_peak_memory_gb"] = runs["kd"]["peak_memory_gb"]
    if ok("kd") and ok("gkd"):
        results["kd_vs_trl_speedup"] = runs["gkd"]["median_step_s"] / runs["kd"]["median_step_s"]
        results["trl_gkd_peak_memory_gb"] = runs["gkd"]["peak_memory_gb"]
    if ok("topk") and ok("sft"):
        results["kd_offline_step_ratio"] = runs["topk"]["median_step_s"] / runs["sft"]["median_step_s"]
    if args.baseline and ok("sft"):
        base = json.loads(Path(args.baseline).read_text())
        world = runs["sft"]["world_size"]
        results["ddp2_scaling"] = runs["sft"]["tokens_per_s"] / (world * base["sft_tokens_per_s"])
        if ok("kd") and base.get("runs", {}).get("kd", {}).get("tokens_per_s"):
            results["ddp2_kd_scaling"] = runs["kd"]["tokens_per_s"] / (
                world * base["runs"]["kd"]["tokens_per_s"]
            )
        results = {
            **{k: v for k, v in base.items() if k != "runs"},
            "ddp": results,
            "runs": base.get("runs"),
            **{k: results[k] for k in ("ddp2_scaling", "ddp2_kd_scaling") if k in results},
        }
    if local_rank == 0:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
        summary = {k: v for k, v in results.items() if k != "runs"}
        print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
