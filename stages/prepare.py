"""Stage `prepare`: read Banking77, split, tokenize and mask.

Reads params `data`, `prompt`; the tokenizer in --base. Writes into --out (one atomic folder):
`{train,validation,test}.parquet` (text, label, input_ids, labels, prompt_length),
`labels.json` (the intents and their label token ids), `prompt.json` (template, max_length),
`report.json` (row counts, truncations, train/test overlap, token-length statistics).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from banking77_ft.data import count_overlap, read_source, split_validation, stratified_sample
from banking77_ft.io import atomic_dir, write_json
from banking77_ft.modeling import load_tokenizer
from banking77_ft.params import as_dict
from banking77_ft.prompting import encode_example, label_token_ids
from banking77_ft.stage import run_stage


def encode_split(frame: pd.DataFrame, tokenizer, template: str, max_length: int) -> pd.DataFrame:
    encoded = [encode_example(tokenizer, template, text, label, max_length)
               for text, label in zip(frame["text"], frame["category"])]
    return pd.DataFrame({
        "text": frame["text"].tolist(),
        "label": frame["category"].tolist(),
        "input_ids": [e.input_ids for e in encoded],
        "labels": [e.labels for e in encoded],
        "prompt_length": [e.prompt_length for e in encoded],
        "truncated": [e.truncated for e in encoded],
    })


def length_stats(frame: pd.DataFrame) -> dict:
    if frame.empty:  # the validation split with data.val_fraction: 0
        return {"rows": 0, "truncated": 0}
    lengths = np.array([len(x) for x in frame["input_ids"]])
    label_tokens = np.array([len(x) - p for x, p in zip(frame["input_ids"], frame["prompt_length"])])
    return {"rows": int(len(frame)), "tokens_mean": round(float(lengths.mean()), 2),
            "tokens_p50": int(np.percentile(lengths, 50)), "tokens_p95": int(np.percentile(lengths, 95)),
            "tokens_max": int(lengths.max()), "label_tokens_mean": round(float(label_tokens.mean()), 2),
            "truncated": int(frame["truncated"].sum())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--base", required=True, type=Path, help="folder with the tokenizer")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    with run_stage("prepare", args.params, ("data", "prompt")) as params:
        data, prompt = params["data"], params["prompt"]
        raw = read_source(data.source)  # every data problem is reported here, before tokenizing
        train_pool = stratified_sample(raw.train, data.max_train_examples, data.seed)
        test = stratified_sample(raw.test, data.max_test_examples, data.seed)
        train, validation = split_validation(train_pool, data.val_fraction, data.seed)
        tokenizer = load_tokenizer(args.base)
        splits = {name: encode_split(frame, tokenizer, prompt.template, prompt.max_length)
                  for name, frame in (("train", train), ("validation", validation), ("test", test))}
        report = {name: length_stats(frame) for name, frame in splits.items()}
        report["train_test_exact_duplicates"] = count_overlap(raw.train, raw.test)
        labels = {"labels": raw.labels, "token_ids": [label_token_ids(tokenizer, x) for x in raw.labels]}
        with atomic_dir(args.out) as tmp:
            for name, frame in splits.items():
                frame.to_parquet(tmp / f"{name}.parquet", index=False)
            write_json(tmp / "labels.json", labels)
            write_json(tmp / "prompt.json", as_dict(prompt))
            write_json(tmp / "report.json", report)
        for name in splits:
            stats = report[name]
            if not stats["rows"]:
                print(f"prepare: {name}: 0 rows (data.val_fraction: 0)", file=sys.stderr)
                continue
            print(f"prepare: {name}: {stats['rows']} rows, tokens mean {stats['tokens_mean']} "
                  f"p95 {stats['tokens_p95']} max {stats['tokens_max']}, label tokens mean "
                  f"{stats['label_tokens_mean']}, {stats['truncated']} message(s) truncated", file=sys.stderr)
        print(f"prepare: {report['train_test_exact_duplicates']} test message(s) also appear verbatim in "
              "train (kept: the published test set stays whole)", file=sys.stderr)


if __name__ == "__main__":
    main()
