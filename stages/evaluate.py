"""Stage `evaluate`: predict an intent for every test message and score the predictions.

Reads params `evaluate` and `ensemble`; `data/prepared/test.parquet`, the fine-tuned checkpoint
(which carries labels.json and prompt.json) and, when `ensemble.members` names any, each
member's checkpoint under --members: then every model scores all labels of every message, the
prediction comes from their averaged log-probabilities (`banking77_ft.ensembling`), and each
model's own accuracy is reported next to the ensemble's. Writes `metrics/eval.json`,
`metrics/confusion.csv` (actual, predicted: one row per message, for the DVC confusion plot),
`metrics/per_class.csv`, `metrics/predictions.csv`, `metrics/errors.json` and
`metrics/calibration.csv`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from banking77_ft.decoding import LabelTrie, constrained_decode, free_decode, prompt_ids
from banking77_ft.ensembling import average_log_probs, label_log_probs, predictions_from
from banking77_ft.io import write_csv, write_json
from banking77_ft.metrics import (INVALID, WATCHED_PAIR, calibration_table, classification_metrics,
                                  expected_calibration_error, most_confused_pairs, pair_counts, per_class_table,
                                  weakest_intents)
from banking77_ft.modeling import configure_runtime, load_model, load_tokenizer
from banking77_ft.params import ParamsError
from banking77_ft.progress import Progress
from banking77_ft.stage import run_stage


def ensemble_folders(model: Path, members_dir: Path | None, names: list[str]) -> dict[str, Path]:
    """{name: checkpoint folder}, the train stage's model first; every member must exist and
    share the main model's labels, checked before any model is loaded."""
    folders = {"train": model}
    if names and members_dir is None:
        raise ParamsError("ensemble.members is not empty but evaluate was given no --members folder")
    labels = (model / "labels.json").read_text(encoding="utf-8")
    for name in names:
        folder = members_dir / name
        if not (folder / "labels.json").is_file():
            raise FileNotFoundError(f"{folder}: no checkpoint for ensemble member {name!r} "
                                    f"(run its stage: dvc repro member@{name})")
        if (folder / "labels.json").read_text(encoding="utf-8") != labels:
            raise ParamsError(f"{folder}/labels.json: member {name!r} was trained on other labels than {model}")
        folders[name] = folder
    return folders


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--members", type=Path, help="folder with one checkpoint per ensemble member")
    parser.add_argument("--test", required=True, type=Path)
    parser.add_argument("--metrics-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    with run_stage("evaluate", args.params, ("evaluate", "ensemble")) as params:
        config = params["evaluate"]
        members = sorted(params["ensemble"].members)
        if members and config.decoding != "constrained":
            raise ParamsError(f"evaluate.decoding: {config.decoding!r} cannot average an ensemble (it has no label "
                              f"probabilities); use constrained, or empty ensemble.members")
        folders = ensemble_folders(args.model, args.members, members)
        configure_runtime(None)
        test = pd.read_parquet(args.test)
        label_info = json.loads((args.model / "labels.json").read_text(encoding="utf-8"))
        labels = label_info["labels"]
        tokenizer = load_tokenizer(args.model)
        prompts = prompt_ids(test)
        progress = Progress("evaluate", len(prompts) * len(folders), "message")
        t0 = time.monotonic()
        model_accuracy = {}
        if config.decoding == "constrained":
            trie = LabelTrie.build(labels, label_info["token_ids"])
            if members:
                scores = []
                for name, folder in folders.items():
                    scores.append(label_log_probs(load_model(folder), prompts, trie, config.batch_size,
                                                  tokenizer.pad_token_id, config.precision, progress.advance))
                    alone = [labels[i] for i in scores[-1].argmax(axis=1)]
                    model_accuracy[name] = round(sum(a == p for a, p in zip(test["label"], alone)) / len(alone), 6)
                results = predictions_from(average_log_probs(scores), labels, config.top_k)
            else:
                results = constrained_decode(load_model(args.model), prompts, trie, config.batch_size, config.top_k,
                                             tokenizer.pad_token_id, config.precision, progress.advance)
            predicted = [r.label for r in results]
            confidence = [r.confidence for r in results]
            tops = [r.top for r in results]
        else:
            model = load_model(args.model)
            longest = max(len(t) for t in label_info["token_ids"])
            texts = free_decode(model, tokenizer, prompts, longest + 1, config.batch_size, config.precision,
                                progress.advance)
            known = set(labels)
            predicted = [t if t in known else INVALID for t in texts]
            confidence, tops = [float("nan")] * len(predicted), [[] for _ in predicted]
        seconds = time.monotonic() - t0
        progress.close()

        actual, texts = test["label"].tolist(), test["text"].tolist()
        summary = classification_metrics(actual, predicted, labels)
        table = per_class_table(actual, predicted, labels)
        summary.update(decoding=config.decoding, examples_per_second=round(len(actual) / seconds, 2),
                       decode_seconds=round(seconds, 1), models=len(folders))
        if model_accuracy:  # each model alone, argmax of its own label distribution
            summary["model_accuracy"] = model_accuracy
        predictions = pd.DataFrame({"text": texts, "actual": actual, "predicted": predicted,
                                    "confidence": [round(c, 6) for c in confidence]})
        for k in range(config.top_k):
            predictions[f"top{k + 1}"] = [t[k][0] if len(t) > k else "" for t in tops]
            predictions[f"top{k + 1}_p"] = [round(t[k][1], 6) if len(t) > k else None for t in tops]
        scored = config.decoding == "constrained"  # free decoding has no confidence to calibrate
        calibration = calibration_table(confidence if scored else [],
                                        [a == p for a, p in zip(actual, predicted)] if scored else [],
                                        config.calibration_bins)
        summary["ece"] = round(expected_calibration_error(calibration), 6) if scored else None
        summary["mean_confidence"] = round(sum(confidence) / len(confidence), 6) if scored else None
        watched = pair_counts(actual, predicted, WATCHED_PAIR)
        summary["card_arrival_vs_card_delivery_estimate"] = watched
        errors = {"most_confused_pairs": most_confused_pairs(texts, actual, predicted),
                  "weakest_intents": weakest_intents(table), "watched_pair": watched}

        out = args.metrics_dir
        write_csv(out / "confusion.csv", pd.DataFrame({"actual": actual, "predicted": predicted}))
        write_csv(out / "per_class.csv", table)
        write_csv(out / "predictions.csv", predictions)
        write_json(out / "errors.json", errors)
        write_csv(out / "calibration.csv", calibration)
        write_json(out / "eval.json", summary)
        print(f"evaluate: accuracy {summary['accuracy']:.4f} macro-F1 {summary['macro_f1']:.4f} "
              f"invalid {summary['invalid_rate']:.4f} on {len(actual)} messages, "
              f"{summary['examples_per_second']} messages/s ({config.decoding})", file=sys.stderr)


if __name__ == "__main__":
    main()
