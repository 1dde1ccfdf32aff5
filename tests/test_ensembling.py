"""Ensembles: exact scores for every label, and the averaging that turns several into one."""

from __future__ import annotations

import math

import numpy as np
import pytest

from banking77_ft.decoding import LabelTrie, constrained_decode
from banking77_ft.ensembling import average_log_probs, label_log_probs, predictions_from
from banking77_ft.prompting import encode_prompt, label_token_ids

TEMPLATE = "Banking customer message: {text}\nIntent:"
MESSAGES = ["I am still waiting on my card?", "What is the exchange rate?", "My card was stolen!",
            "top up failed", "cancel my transfer please"]


def log_rows(*rows):
    with np.errstate(divide="ignore"):  # log(0) = -inf is meant: a label ruled out
        return np.log(np.array(rows, dtype=float))


def test_label_log_probs_scores_every_label_exactly(tiny_model, tokenizer, labels):
    trie = LabelTrie.build(labels, [label_token_ids(tokenizer, l) for l in labels])
    prompts = [encode_prompt(tokenizer, TEMPLATE, m, 128, 17) for m in MESSAGES]
    scores = label_log_probs(tiny_model, prompts, trie, batch_size=2, pad_token_id=tokenizer.pad_token_id)
    assert scores.shape == (len(MESSAGES), 77) and np.isfinite(scores).all()
    np.testing.assert_allclose(np.exp(scores).sum(axis=1), 1.0, rtol=1e-4)  # a distribution over the labels
    beams = constrained_decode(tiny_model, prompts, trie, batch_size=3, top_k=3, pad_token_id=tokenizer.pad_token_id)
    for row, beam in zip(scores, beams):
        assert labels[int(row.argmax())] == beam.label  # the beam's best is the exact best
        for label, probability in beam.top:
            assert math.isclose(math.exp(row[labels.index(label)]), probability, rel_tol=1e-3)


def test_average_of_one_or_of_copies_is_the_member_itself():
    member = log_rows([0.7, 0.2, 0.1], [0.05, 0.05, 0.9])
    np.testing.assert_allclose(average_log_probs([member]), member)
    np.testing.assert_allclose(average_log_probs([member, member, member]), member)


def test_average_is_the_normalised_geometric_mean():
    first, second = log_rows([0.6, 0.3, 0.1]), log_rows([0.1, 0.8, 0.1])
    averaged = np.exp(average_log_probs([first, second]))[0]
    expected = np.sqrt([0.06, 0.24, 0.01])
    np.testing.assert_allclose(averaged, expected / expected.sum())
    assert averaged.argmax() == 1  # the second member's confidence outweighs the first's lean
    # a label one member rules out (probability 0) stays out, however sure the other is
    ruled_out = average_log_probs([log_rows([1.0, 0.0]), log_rows([0.01, 0.99])])
    assert np.exp(ruled_out)[0, 1] == 0.0


def test_average_rejects_an_empty_or_mismatched_ensemble():
    with pytest.raises(ValueError, match="at least one member"):
        average_log_probs([])
    with pytest.raises(ValueError, match="different shapes"):
        average_log_probs([log_rows([0.5, 0.5]), log_rows([0.2, 0.3, 0.5])])


def test_predictions_from_ranks_labels_best_first():
    predictions = predictions_from(log_rows([0.2, 0.5, 0.3], [0.4, 0.4, 0.2]), ["a", "b", "c"], top_k=2)
    assert [(p.label, round(p.confidence, 6)) for p in predictions] == [("b", 0.5), ("a", 0.4)]
    assert [label for label, _ in predictions[0].top] == ["b", "c"]
    assert [label for label, _ in predictions[1].top] == ["a", "b"]  # a tie goes to the label listed first
