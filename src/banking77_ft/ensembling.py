"""A deep ensemble of fine-tunes: every model scores all 77 labels of every message, and the
prediction comes from the average of their label log-probabilities.

Why the average of log-probabilities (the normalised geometric mean of the distributions)
rather than of probabilities: on the validation split both gained the same over single models
with two members, and the log average was ahead with more (README, Experiments); it also lets
one confident member outvote a hesitant one only as far as the other does not object.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from .decoding import LabelTrie, Prediction, constrained_decode


def label_log_probs(model, prompts: Sequence[Sequence[int]], trie: LabelTrie, batch_size: int, pad_token_id: int,
                    precision: str = "fp32", progress=None) -> np.ndarray:
    """(messages, labels) log-probabilities of every label, in `trie.labels` order.

    Constrained beam search with as many beams as labels never prunes, so it is exhaustive and
    every probability is exact (locally normalised, as in `decoding`); each row sums to 1."""
    predictions = constrained_decode(model, prompts, trie, batch_size, top_k=len(trie.labels),
                                     pad_token_id=pad_token_id, precision=precision, progress=progress)
    column = {label: i for i, label in enumerate(trie.labels)}
    scores = np.full((len(predictions), len(trie.labels)), -np.inf)
    for row, prediction in enumerate(predictions):
        for label, probability in prediction.top:
            scores[row, column[label]] = np.log(probability) if probability > 0 else -np.inf
    return scores


def average_log_probs(members: Sequence[np.ndarray]) -> np.ndarray:
    """The members' mean log-probability per label, renormalised so each row is a distribution."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    shapes = {m.shape for m in members}
    if len(shapes) != 1:
        raise ValueError(f"members scored different shapes: {sorted(shapes)}")
    mean = np.mean(np.stack(members), axis=0)
    peak = mean.max(axis=1, keepdims=True)  # log-sum-exp, shifted so nothing overflows
    return mean - (peak + np.log(np.exp(mean - peak).sum(axis=1, keepdims=True)))


def predictions_from(log_probs: np.ndarray, labels: Sequence[str], top_k: int) -> list[Prediction]:
    """The top-k labels of each row, best first; ties go to the label listed first."""
    predictions = []
    for row in log_probs:
        best = np.argsort(-row, kind="stable")[:top_k]
        top = [(labels[i], float(np.exp(row[i]))) for i in best]
        predictions.append(Prediction(label=top[0][0], confidence=top[0][1], top=top))
    return predictions
