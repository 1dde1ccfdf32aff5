"""Pure functions from predictions to metrics, error analysis and calibration tables."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

INVALID = "<invalid>"
# The slip the reference recipe reports; tracked explicitly in every evaluation.
WATCHED_PAIR = ("card_arrival", "card_delivery_estimate")


def classification_metrics(actual: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy and F1 over the closed label set. An invalid generation counts as wrong for its
    true class (it is never a correct prediction), and is not a class of its own."""
    labels = list(labels)
    return {
        "n": len(actual),
        "accuracy": round(float(accuracy_score(actual, predicted)), 6),
        "macro_f1": round(float(f1_score(actual, predicted, labels=labels, average="macro", zero_division=0)), 6),
        "weighted_f1": round(float(f1_score(actual, predicted, labels=labels, average="weighted",
                                            zero_division=0)), 6),
        "invalid_rate": round(float(np.mean([p not in set(labels) for p in predicted])), 6),
    }


def per_class_table(actual: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> pd.DataFrame:
    precision, recall, f1, support = precision_recall_fscore_support(actual, predicted, labels=list(labels),
                                                                     zero_division=0)
    return pd.DataFrame({"intent": list(labels), "precision": precision.round(6), "recall": recall.round(6),
                         "f1": f1.round(6), "support": support})


def most_confused_pairs(texts: Sequence[str], actual: Sequence[str], predicted: Sequence[str],
                        n: int = 10, examples: int = 2) -> list[dict]:
    """The n most frequent (actual, predicted) mistakes, each with a few example messages.
    Ties are broken alphabetically so the list is deterministic."""
    errors = [(a, p) for a, p in zip(actual, predicted) if a != p]
    counts = sorted(Counter(errors).items(), key=lambda item: (-item[1], item[0]))[:n]
    out = []
    for (a, p), count in counts:
        shown = [t for t, x, y in zip(texts, actual, predicted) if x == a and y == p][:examples]
        out.append({"actual": a, "predicted": p, "count": count, "examples": shown})
    return out


def weakest_intents(table: pd.DataFrame, n: int = 10) -> list[dict]:
    weakest = table.sort_values(["f1", "intent"]).head(n)
    return [{"intent": r.intent, "f1": float(r.f1), "precision": float(r.precision), "recall": float(r.recall),
             "support": int(r.support)} for r in weakest.itertuples()]


def pair_counts(actual: Sequence[str], predicted: Sequence[str], pair: tuple[str, str] = WATCHED_PAIR) -> dict:
    a, b = pair
    both = list(zip(actual, predicted))
    return {f"{a}->{b}": both.count((a, b)), f"{b}->{a}": both.count((b, a)),
            f"{a}_support": sum(x == a for x in actual), f"{b}_support": sum(x == b for x in actual)}


def calibration_table(confidence: Sequence[float], correct: Sequence[bool], bins: int) -> pd.DataFrame:
    """Equal-width confidence bins: count, mean confidence and accuracy per bin."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        rows.append({"bin": b, "lower": round(edges[b], 4), "upper": round(edges[b + 1], 4),
                     "count": int(inside.sum()),
                     "confidence": round(float(confidence[inside].mean()), 6) if inside.any() else None,
                     "accuracy": round(float(correct[inside].mean()), 6) if inside.any() else None})
    return pd.DataFrame(rows)


def expected_calibration_error(table: pd.DataFrame) -> float:
    """ECE = sum over bins of (bin share) * |accuracy - mean confidence|."""
    filled = table[table["count"] > 0]
    total = filled["count"].sum()
    if total == 0:
        return float("nan")
    return float((filled["count"] / total * (filled["accuracy"] - filled["confidence"]).abs()).sum())
