"""Constrained decoding: always a valid intent, exact probabilities, sensible top-k."""

from __future__ import annotations

import math

import pytest
import torch

from banking77_ft.decoding import LabelTrie, constrained_decode, free_decode
from banking77_ft.prompting import encode_prompt, label_token_ids

TEMPLATE = "Banking customer message: {text}\nIntent:"
MESSAGES = ["I am still waiting on my card?", "What is the exchange rate?", "My card was stolen!",
            "Why was I charged a fee for my cash withdrawal?", "top up failed", "cancel my transfer please"]


@pytest.fixture(scope="module")
def trie(tokenizer, labels):
    return LabelTrie.build(labels, [label_token_ids(tokenizer, l) for l in labels])


@pytest.fixture()
def prompts(tokenizer):
    return [encode_prompt(tokenizer, TEMPLATE, m, 128, 17) for m in MESSAGES]


def test_trie_structure(trie, labels):
    assert trie.only_label[0] == -1
    assert len(trie.vocab) < 300  # the LM head is restricted to these few hundred ids
    leaves = [n for n, kids in enumerate(trie.children) if not kids]
    assert sorted(trie.only_label[n] for n in leaves) == list(range(77))


def test_trie_rejects_ambiguous_labels():
    with pytest.raises(ValueError, match="prefix"):
        LabelTrie.build(["a", "ab"], [[5, 1], [5, 1, 6]])


def test_constrained_predictions_are_valid_where_free_ones_are_not(tiny_model, tokenizer, trie, prompts, labels):
    constrained = constrained_decode(tiny_model, prompts, trie, batch_size=4, top_k=3,
                                     pad_token_id=tokenizer.pad_token_id)
    assert all(p.label in labels for p in constrained)
    free = free_decode(tiny_model, tokenizer, prompts, max_new_tokens=8, batch_size=4)
    assert sum(text not in labels for text in free) > 0  # a random model writes junk freely


def test_confidence_and_top_k_are_consistent(tiny_model, tokenizer, trie, prompts):
    for prediction in constrained_decode(tiny_model, prompts, trie, batch_size=4, top_k=3,
                                         pad_token_id=tokenizer.pad_token_id):
        probabilities = [p for _, p in prediction.top]
        assert len(prediction.top) == 3 and len({l for l, _ in prediction.top}) == 3
        assert prediction.top[0] == (prediction.label, prediction.confidence)
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-6


@torch.no_grad()
def brute_force_log_probs(model, prompt, trie, labels, sequences):
    """Locally normalised log P(label) by running prompt+label through the model without cache."""
    head = model.lm_head.weight[trie.vocab]
    column = trie.column
    scores = []
    for sequence in sequences:
        ids = torch.tensor([prompt + sequence[:-1]])
        hidden = model.get_decoder()(input_ids=ids).last_hidden_state[0, len(prompt) - 1:]
        node, total = 0, 0.0
        for position, token in enumerate(sequence):
            logits = (hidden[position] @ head.T).masked_fill(~trie.allowed[node], float("-inf"))
            total += float(torch.log_softmax(logits, -1)[column[token]])
            node = trie.children[node][token]
        scores.append(total)
    return scores


def test_beam_probabilities_are_exact_and_wide_beam_is_exhaustive(tiny_model, tokenizer, trie, labels, prompts):
    sequences = [label_token_ids(tokenizer, l) for l in labels]
    exact = brute_force_log_probs(tiny_model, prompts[0], trie, labels, sequences)
    assert math.isclose(sum(math.exp(s) for s in exact), 1.0, rel_tol=1e-4)  # locally normalised
    wide = constrained_decode(tiny_model, prompts[:1], trie, top_k=77, pad_token_id=tokenizer.pad_token_id)[0]
    ranked = sorted(zip(exact, labels), reverse=True)
    assert wide.label == ranked[0][1]
    for label, probability in wide.top:
        assert math.isclose(probability, math.exp(exact[labels.index(label)]), rel_tol=1e-3)
    # batched with other (padded) prompts gives the same answer as alone
    batched = constrained_decode(tiny_model, prompts, trie, batch_size=6, top_k=3,
                                 pad_token_id=tokenizer.pad_token_id)[0]
    assert batched.label == wide.label
    assert math.isclose(batched.confidence, wide.confidence, rel_tol=1e-3)


def test_validation_accuracy_scores_greedy_constrained_predictions(tiny_model, tokenizer, trie, prompts, labels):
    import pandas as pd

    from banking77_ft.decoding import accuracy_on

    greedy = constrained_decode(tiny_model, prompts, trie, batch_size=4, top_k=1,
                                pad_token_id=tokenizer.pad_token_id)
    wrong = [next(l for l in labels if l != p.label) for p in greedy]
    actual = [p.label for p in greedy[:4]] + wrong[4:]  # 4 of 6 rows agree with the model
    frame = pd.DataFrame({"input_ids": [p + [1, 2] for p in prompts],  # label tokens after the prompt
                          "prompt_length": [len(p) for p in prompts], "label": actual})
    label_info = {"labels": labels, "token_ids": [label_token_ids(tokenizer, l) for l in labels]}
    assert accuracy_on(tiny_model, frame, label_info, batch_size=4,
                       pad_token_id=tokenizer.pad_token_id) == pytest.approx(4 / 6)
