"""Stage `plot`: PNG figures from the metrics files.

Reads params `plot`; metrics/{confusion,per_class,calibration,train_loss,val_loss}.csv,
metrics/eval.json, and the label list. Writes plots/{confusion,loss,per_class_f1,reliability}.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from banking77_ft.io import write_png
from banking77_ft.plotting import confusion_figure, loss_figure, per_class_f1_figure, reliability_figure
from banking77_ft.stage import run_stage


def save(figure, target: Path) -> None:
    write_png(target, lambda tmp: figure.savefig(tmp, format="png"))
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics-dir", required=True, type=Path)
    parser.add_argument("--labels", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    with run_stage("plot", args.params, ("plot",)) as params:
        dpi = params["plot"].dpi
        m = args.metrics_dir
        labels = json.loads(args.labels.read_text(encoding="utf-8"))["labels"]
        confusion = pd.read_csv(m / "confusion.csv", keep_default_na=False)
        summary = json.loads((m / "eval.json").read_text(encoding="utf-8"))
        save(confusion_figure(confusion["actual"], confusion["predicted"], labels, dpi), args.out / "confusion.png")
        save(loss_figure(pd.read_csv(m / "train_loss.csv"), pd.read_csv(m / "val_loss.csv"), dpi),
             args.out / "loss.png")
        save(per_class_f1_figure(pd.read_csv(m / "per_class.csv"), dpi), args.out / "per_class_f1.png")
        save(reliability_figure(pd.read_csv(m / "calibration.csv"), summary.get("ece"), dpi),
             args.out / "reliability.png")


if __name__ == "__main__":
    main()
