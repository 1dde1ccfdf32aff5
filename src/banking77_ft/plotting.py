"""Matplotlib figures from the metrics files. Each function takes data and returns a Figure;
the plot stage saves them atomically."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402


def confusion_figure(actual: Sequence[str], predicted: Sequence[str], labels: Sequence[str], dpi: int):
    """Row-normalised 77x77 heatmap (recall on the diagonal), log-free so small slips stay
    visible against a near-diagonal matrix; invalid predictions get a last column."""
    columns = list(labels) + (["<invalid>"] if any(p not in set(labels) for p in predicted) else [])
    matrix = confusion_matrix(actual, predicted, labels=columns)[: len(labels)]
    support = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, support, out=np.zeros(matrix.shape, dtype=float), where=support > 0)
    size = max(8.0, 0.19 * len(columns))
    fig, ax = plt.subplots(figsize=(size + 2, size), dpi=dpi)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=5)
    ax.set_yticks(range(len(labels)), labels, fontsize=5)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    accuracy = float(np.mean(np.asarray(actual) == np.asarray(predicted)))
    ax.set_title(f"Banking77 test confusion (row-normalised), accuracy {accuracy:.2%}, n={len(actual)}")
    for i, j in zip(*np.nonzero((matrix > 0) & ~np.eye(*matrix.shape, dtype=bool))):
        ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=4, color="crimson")
    fig.colorbar(image, ax=ax, fraction=0.03, label="share of the actual intent")
    fig.tight_layout()
    return fig


def loss_figure(train_log: pd.DataFrame, val_log: pd.DataFrame, dpi: int):
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=dpi)
    if len(train_log):
        ax.plot(train_log["step"], train_log["loss"], lw=0.6, alpha=0.45, label="train (per step)")
        window = max(1, len(train_log) // 50)
        smooth = train_log["loss"].rolling(window, min_periods=1).mean()
        ax.plot(train_log["step"], smooth, lw=1.5, label=f"train ({window}-step mean)")
    if len(val_log):
        ax.plot(val_log["step"], val_log["val_loss"], "o-", color="crimson", label="validation (per epoch)")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("label-token cross-entropy")
    ax.set_title("Training and validation loss" if len(val_log) else "Training loss (no validation split)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def per_class_f1_figure(table: pd.DataFrame, dpi: int):
    ordered = table.sort_values("f1")
    fig, ax = plt.subplots(figsize=(8, max(6.0, 0.16 * len(ordered))), dpi=dpi)
    ax.barh(range(len(ordered)), ordered["f1"], color="steelblue")
    ax.set_yticks(range(len(ordered)), ordered["intent"], fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 on the test set")
    ax.set_title("Per-intent F1, weakest first")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def reliability_figure(calibration: pd.DataFrame, ece: float | None, dpi: int):
    fig, ax = plt.subplots(figsize=(5, 5), dpi=dpi)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    filled = calibration[calibration["count"] > 0]
    if len(filled):
        centers = (filled["lower"] + filled["upper"]) / 2
        ax.bar(centers, filled["accuracy"], width=filled["upper"] - filled["lower"], alpha=0.6,
               edgecolor="black", label="accuracy in bin")
        ax.plot(filled["confidence"], filled["accuracy"], "o", color="crimson", label="(mean confidence, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    title = "Reliability diagram" + (f", ECE {ece:.4f}" if ece is not None else " (no confidences)")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
