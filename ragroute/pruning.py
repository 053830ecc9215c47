"""Structured pruning of a decoder-only model: drop whole layers (depth) and MLP neurons (width).

Naive depth pruning wrecks a small model (SmolLM2-135M dev-answer LM loss: full 4.40, every other layer kept
14.2, last 10 layers dropped 22.3), so what to drop is chosen by measured importance on calibration text:

* depth, after ShortGPT (Men et al., 2024): a layer's *block influence* is ``1 - cos(h_in, h_out)`` averaged
  over tokens; layers that barely change the residual stream are dropped first;
* width, after Minitron (Muralidharan et al., 2024): an MLP neuron's importance is its mean absolute activation
  (the input of ``down_proj``); the least active neurons are removed from gate/up/down projections.

CPU decode latency follows FLOPs, so width matters as much as depth there. The pruned model is a starting point
for logit distillation (``ragroute train``), which recovers most of the loss.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ragroute.models import PruneSpec

log = logging.getLogger("ragroute.models")


def demo_corpus_path() -> Path:
    return Path(str(resources.files("ragroute") / "data" / "demo" / "corpus.jsonl"))


def calibration_texts(n: int) -> list[str]:
    """Biomedical calibration text: the first ``n`` documents of the bundled demo corpus."""
    from itertools import islice

    from ragroute.records import iter_jsonl

    return [f"{doc['title']}\n{doc['text']}" for doc in islice(iter_jsonl(demo_corpus_path()), n)]


@torch.no_grad()
def measure_importance(model, tokenizer, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Block influence of every decoder layer and mean |activation| of every MLP neuron, over ``texts``."""
    layers = model.model.layers
    influence = torch.zeros(len(layers), dtype=torch.float64)
    neuron_activity = [torch.zeros(layer.mlp.down_proj.in_features, dtype=torch.float64) for layer in layers]
    token_count = 0
    handles = []

    def layer_hook(index: int):
        def hook(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs["hidden_states"]
            hidden_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
            influence[index] += (1 - cos).sum().double()

        return hook

    def neuron_hook(index: int):
        def hook(module, args):
            neuron_activity[index] += args[0].float().abs().sum(dim=(0, 1)).double()

        return hook

    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(layer_hook(i), with_kwargs=True))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(neuron_hook(i)))
    try:
        model.eval()
        for text in texts:
            ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens).input_ids
            model(input_ids=ids, use_cache=False)
            token_count += ids.shape[1]
    finally:
        for handle in handles:
            handle.remove()
    return influence / token_count, [a / token_count for a in neuron_activity]


def choose_layers(prune: PruneSpec, influence: torch.Tensor) -> list[int]:
    """Indices of the decoder layers to keep, in their original order."""
    total = len(influence)
    if prune.method == "every_other":
        return list(range(0, total, 2))
    if prune.method == "layers":
        bad = [i for i in prune.drop_layers if not 0 <= i < total]
        if bad:
            raise ValueError(f"drop_layers {bad} out of range for a model with {total} layers")
        return [i for i in range(total) if i not in set(prune.drop_layers)]
    keep = prune.num_layers or total // 2
    if not 0 < keep <= total:
        raise ValueError(f"num_layers must be in 1..{total}, not {keep}")
    # The first and last layers are kept whatever their score: they map into and out of the embedding space.
    scores = influence.clone()
    scores[0] = scores[-1] = float("inf")
    return sorted(torch.topk(scores, keep).indices.tolist())


def prune_mlp_width(model, activity: list[torch.Tensor], intermediate_size: int) -> None:
    """Keep the ``intermediate_size`` most active neurons of every MLP (gate/up rows, down columns)."""
    for layer, scores in zip(model.model.layers, activity, strict=True):
        mlp = layer.mlp
        if intermediate_size >= mlp.down_proj.in_features:
            continue
        keep = torch.topk(scores, intermediate_size).indices.sort().values
        for name in ("gate_proj", "up_proj"):
            old = getattr(mlp, name)
            new = torch.nn.Linear(old.in_features, intermediate_size, bias=old.bias is not None, dtype=old.weight.dtype)
            new.weight.data = old.weight.data[keep].clone()
            if old.bias is not None:
                new.bias.data = old.bias.data[keep].clone()
            setattr(mlp, name, new)
        old = mlp.down_proj
        new = torch.nn.Linear(intermediate_size, old.out_features, bias=old.bias is not None, dtype=old.weight.dtype)
        new.weight.data = old.weight.data[:, keep].clone()
        if old.bias is not None:
            new.bias.data = old.bias.data.clone()
        mlp.down_proj = new
    model.config.intermediate_size = intermediate_size


def drop_layers(model, keep: list[int]) -> None:
    """Keep only the decoder layers in ``keep`` and renumber them so the KV cache indexes them right."""
    config = model.config
    old_count = config.num_hidden_layers
    model.model.layers = torch.nn.ModuleList([model.model.layers[i] for i in keep])
    for new_index, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = new_index
    config.num_hidden_layers = len(keep)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == old_count:
        config.layer_types = [layer_types[i] for i in keep]
    # Qwen2: layers below max_window_layers use full attention, the rest a sliding window (when enabled). Count
    # the kept layers below the old bound, so every kept layer keeps its kind of attention.
    window_start = getattr(config, "max_window_layers", None)
    if isinstance(window_start, int):
        config.max_window_layers = sum(1 for i in keep if i < window_start)


def prune_model(model, tokenizer, prune: PruneSpec) -> dict[str, Any]:
    """Prune ``model`` in place as ``prune`` says; returns what was kept and the measured scores."""
    texts = calibration_texts(prune.calibration_texts)
    influence, activity = measure_importance(model, tokenizer, texts, prune.calibration_max_tokens)
    keep = choose_layers(prune, influence)
    log.info("block influence per layer: %s", [round(x, 4) for x in influence.tolist()])
    log.info("keeping %d/%d layers: %s", len(keep), len(influence), keep)
    if prune.intermediate_size:
        prune_mlp_width(model, activity, prune.intermediate_size)
    drop_layers(model, keep)
    return {
        "kept_layers": keep,
        "block_influence": influence.tolist(),
        "intermediate_size": model.config.intermediate_size,
    }


def prune_checkpoint(source: str, prune: PruneSpec, out_dir: Path) -> dict[str, Any]:
    """Load ``source``, prune it and save the student checkpoint (weights + tokenizer) to ``out_dir``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    # Importance is measured in float32; the student is saved in the dtype its source shipped in (Qwen2.5: bf16),
    # not twice its size.
    saved_dtype = getattr(AutoConfig.from_pretrained(source), "dtype", None) or torch.float32
    before = model.num_parameters()
    info = prune_model(model, tokenizer, prune)
    model.to(saved_dtype if isinstance(saved_dtype, torch.dtype) else getattr(torch, saved_dtype))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "kind": "pruned",
        "source": source,
        "method": prune.method,
        "parameters_before": before,
        "parameters": model.num_parameters(),
        **info,
    }
