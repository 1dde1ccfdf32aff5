"""Stage `baseline`: TF-IDF + logistic regression on the same split, for comparison.

Reads params `baseline`; data/prepared/{train,test}.parquet. Writes metrics/baseline.json
(accuracy, macro/weighted F1 on the same test messages the fine-tune is scored on).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from banking77_ft.io import write_json
from banking77_ft.metrics import classification_metrics
from banking77_ft.stage import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    with run_stage("baseline", args.params, ("baseline",)) as params:
        config = params["baseline"]
        train = pd.read_parquet(args.data / "train.parquet", columns=["text", "label"])
        test = pd.read_parquet(args.data / "test.parquet", columns=["text", "label"])
        labels = sorted(set(train["label"]) | set(test["label"]))
        t0 = time.monotonic()
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, config.ngram_max), max_features=config.max_features,
                            sublinear_tf=True, lowercase=True),
            LogisticRegression(C=config.C, max_iter=2000, random_state=0),
        )
        model.fit(train["text"], train["label"])
        summary = classification_metrics(test["label"].tolist(), model.predict(test["text"]).tolist(), labels)
        summary["fit_seconds"] = round(time.monotonic() - t0, 2)
        summary["method"] = "tfidf+logreg"
        write_json(args.out, summary)
        print(f"baseline: accuracy {summary['accuracy']:.4f} macro-F1 {summary['macro_f1']:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
