"""Label masking on real tokenized rows (the real Gemma tokenizer)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banking77_ft.prompting import IGNORE_INDEX, encode_example, encode_prompt, format_prompt, label_token_ids

TEMPLATE = "Banking customer message: {text}\nIntent:"


def test_format_prompt_flattens_whitespace():
    assert format_prompt("Q: {text}\nA:", "my card\n\nis  lost ") == "Q: my card is lost\nA:"


@pytest.mark.parametrize("text,label", [
    ("I am still waiting on my card?", "card_arrival"),
    ("How long does it take to get my card delivered to the US?", "card_delivery_estimate"),
    ("Why did my transfer fail?  €€ ünïcödé 🙂", "failed_transfer"),
])
def test_label_tokens_decode_to_space_label_eos_and_prompt_is_masked(tokenizer, text, label):
    example = encode_example(tokenizer, TEMPLATE, text, label, max_length=128)
    assert len(example.input_ids) == len(example.labels)
    n = example.prompt_length
    assert example.labels[:n] == [IGNORE_INDEX] * n  # every prompt position is -100
    assert example.labels[n:] == example.input_ids[n:]  # labels are unshifted; the model shifts
    assert IGNORE_INDEX not in example.labels[n:]
    assert tokenizer.decode(example.labels[n:]) == " " + label + tokenizer.eos_token
    assert example.labels[-1] == tokenizer.eos_token_id
    assert example.input_ids[0] == tokenizer.bos_token_id
    # the prompt alone tokenizes to the same prefix: no merge across the prompt/label boundary
    prompt_ids = tokenizer(format_prompt(TEMPLATE, text))["input_ids"]
    assert example.input_ids[:n] == prompt_ids


def test_long_message_is_truncated_never_the_label(tokenizer):
    text = "please help me with my card " * 60
    example = encode_example(tokenizer, TEMPLATE, text, "card_arrival", max_length=48)
    assert example.truncated and len(example.input_ids) == 48
    n = example.prompt_length
    assert tokenizer.decode(example.labels[n:]) == " card_arrival" + tokenizer.eos_token
    assert encode_prompt(tokenizer, TEMPLATE, text, 48, len(label_token_ids(tokenizer, "card_arrival"))) \
        == example.input_ids[:n]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=300).filter(lambda s: s.strip()),
       label=st.sampled_from(["card_arrival", "lost_or_stolen_card", "top_up_by_bank_transfer_charge", "Refund_not_showing_up"]))
def test_random_messages_never_break_masking(tokenizer, text, label):
    example = encode_example(tokenizer, TEMPLATE, text, label, max_length=64)
    n = example.prompt_length
    assert len(example.input_ids) <= 64
    assert example.labels[:n] == [IGNORE_INDEX] * n
    assert example.labels[n:] == label_token_ids(tokenizer, label)
    assert tokenizer.decode(example.labels[n:]) == " " + label + tokenizer.eos_token
