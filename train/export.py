"""The final model, ready for vLLM: LoRA merged, safetensors, tokenizer and chat template, a ragroute marker."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ragroute.artifacts import Checkpoint


def save_final(
    trainer: Any, tokenizer: Any, output_dir: str | Path, info: dict[str, Any], save_dtype: Any = None
) -> Path | None:
    """Write ``<output_dir>/final`` on the main process (every process must call: sharded weights are gathered).

    ``trainer.save_model`` gathers FSDP/ZeRO-3 shards into one checkpoint; a LoRA adapter is then merged into its
    base in memory, so what is served is one plain checkpoint.
    """
    from transformers import AutoModelForCausalLM

    output_dir = Path(output_dir)
    staging = output_dir / "final-unmerged"
    model = trainer.accelerator.unwrap_model(trainer.model)
    is_lora = hasattr(model, "peft_config")
    # Sharded LoRA weights cannot be merged in place: the gathered adapter is written and merged offline.
    sharded = trainer.is_fsdp_enabled or (
        trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    )
    merge_in_memory = is_lora and not sharded
    if not merge_in_memory:
        trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        return None

    def write(tmp: Path) -> dict[str, Any]:
        if merge_in_memory:
            merged = model.merge_and_unload()
            if save_dtype is not None:
                merged = merged.to(save_dtype)
            merged.save_pretrained(tmp)
        elif is_lora:
            shutil.copytree(staging, tmp, dirs_exist_ok=True)
        else:
            AutoModelForCausalLM.from_pretrained(staging, dtype=save_dtype).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return {"kind": "distilled", "lora": is_lora, "lora_merged": merge_in_memory, **info}

    target = output_dir / "final"
    Checkpoint.save(target, write, force=True)
    shutil.rmtree(staging, ignore_errors=True)
    return target
