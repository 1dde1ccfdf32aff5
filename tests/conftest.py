"""Shared fixtures: the real Gemma tokenizer and a tiny randomly initialised Gemma 3.

The tokenizer comes from the GGUF package (15 s to parse), so it is saved once per session
as an ordinary tokenizer folder together with the tiny model, the same thing `stages/base.py`
writes for `model.base: tiny-random`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A models/base-like folder holding the tiny random model and the real tokenizer."""
    from banking77_ft.io import atomic_dir
    from banking77_ft.modeling import materialize_base, resolve_base, save_checkpoint_folder

    out = tmp_path_factory.mktemp("tiny") / "base"
    model, tokenizer = materialize_base(resolve_base("tiny-random"))
    with atomic_dir(out) as tmp:
        save_checkpoint_folder(tmp, model, tokenizer)
    return out


@pytest.fixture(scope="session")
def tokenizer(tiny_base):
    from banking77_ft.modeling import load_tokenizer

    return load_tokenizer(tiny_base)


@pytest.fixture()
def tiny_model(tiny_base):
    from banking77_ft.modeling import load_model

    return load_model(tiny_base)


@pytest.fixture(scope="session")
def labels() -> list[str]:
    import json

    return json.loads((ROOT / "data/raw/banking77/categories.json").read_text())
