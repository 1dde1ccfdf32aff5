"""Prompt building and label masking: the exact text the model sees and learns to continue.

An example is `prompt + " " + label + eos`. The loss is on the label tokens only: every
prompt position in `labels` is -100 (PyTorch's cross-entropy ignore index), so the model is
never trained to reproduce customer messages, only to write the intent after them.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE_INDEX = -100


def format_prompt(template: str, text: str) -> str:
    """The prompt for one message. Newlines inside the message are flattened to spaces so that
    a message cannot imitate the template's own line structure."""
    return template.format(text=" ".join(text.split()))


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    truncated: bool


def label_token_ids(tokenizer, label: str) -> list[int]:
    """Token ids of `" " + label + eos` as they appear after a prompt.

    The leading space belongs to the label: SentencePiece merges it into the first label
    token (" card"), which is also what the model produces when it writes the label. EOS ends
    the label so that generation knows where to stop.
    """
    ids = tokenizer(" " + label, add_special_tokens=False)["input_ids"]
    return list(ids) + [tokenizer.eos_token_id]


def encode_example(tokenizer, template: str, text: str, label: str, max_length: int) -> EncodedExample:
    """Tokenize `prompt + " " + label + eos` and mask the prompt.

    The prompt is tokenized on its own (with BOS) and the label tokens are appended, so the
    prompt's tokens are by construction a prefix of the example. If the example exceeds
    `max_length`, the *message* is truncated (tokens are cut from the end of the prompt,
    before the label), never the label: a truncated label would teach a wrong intent.
    """
    prompt_ids = list(tokenizer(format_prompt(template, text), add_special_tokens=True)["input_ids"])
    target_ids = label_token_ids(tokenizer, label)
    room = max_length - len(target_ids)
    if room < 2:
        raise ValueError(f"prompt.max_length={max_length} leaves no room for the prompt before label {label!r}")
    truncated = len(prompt_ids) > room
    if truncated:
        prompt_ids = prompt_ids[:room]
    input_ids = prompt_ids + target_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids
    return EncodedExample(input_ids=input_ids, labels=labels, prompt_length=len(prompt_ids), truncated=truncated)


def encode_prompt(tokenizer, template: str, text: str, max_length: int, longest_label: int) -> list[int]:
    """Prompt token ids for decoding, truncated exactly as `encode_example` would truncate them."""
    prompt_ids = list(tokenizer(format_prompt(template, text), add_special_tokens=True)["input_ids"])
    return prompt_ids[: max(2, max_length - longest_label)]
