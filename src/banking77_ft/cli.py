"""Command line for people who use the model.

    python -m banking77_ft predict "my card hasn't arrived yet"
    python -m banking77_ft predict --file messages.txt      # one message per line
    python -m banking77_ft predict --file messages.csv      # a `text` column
    python -m banking77_ft check-lock                        # is dvc.lock current?
    python -m banking77_ft results-table                     # README's table from metrics/

`predict` loads `models/finetuned` (or --model) once and prints, per message, the intent,
its confidence and the top-k intents with probabilities (or JSON lines with --json). With
`--member models/members/<name>` (repeatable) it predicts as the ensemble `evaluate` scores:
every model scores every label and their log-probabilities are averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_MODEL = Path("models/finetuned")


class PredictError(ValueError):
    """Bad input to `predict`: no messages, an unreadable file, a missing model."""


def read_messages(messages: list[str], file: Path | None) -> list[str]:
    if file is not None:
        if not file.is_file():
            raise PredictError(f"{file}: file not found")
        if file.suffix.lower() == ".csv":
            import pandas as pd

            frame = pd.read_csv(file, dtype=str, keep_default_na=False)
            if "text" not in frame.columns:
                raise PredictError(f"{file}: a CSV needs a `text` column; found {list(frame.columns)}")
            messages = messages + frame["text"].tolist()
        else:
            messages = messages + file.read_text(encoding="utf-8").splitlines()
    cleaned = [m.strip() for m in messages if m.strip()]
    if not cleaned:
        raise PredictError("no message to classify: give a message, or a --file with at least one non-empty line")
    return cleaned


class Predictor:
    """A fine-tuned checkpoint loaded once, ready to classify batches of messages."""

    def __init__(self, model_dir: Path = DEFAULT_MODEL, top_k: int = 3, batch_size: int = 32,
                 members: list[Path] = ()):
        model_dir = Path(model_dir)
        folders = [model_dir, *map(Path, members)]
        needed = ("config.json", "labels.json", "prompt.json")
        for folder in folders:
            missing = [n for n in needed if not (folder / n).is_file()]
            if missing:
                raise PredictError(f"{folder}: not a fine-tuned model (missing {', '.join(missing)}); "
                                   "run `dvc repro` to train one, or pass --model / --member")
        for folder in folders[1:]:
            for name in ("labels.json", "prompt.json"):
                if (folder / name).read_bytes() != (model_dir / name).read_bytes():
                    raise PredictError(f"{folder}/{name}: differs from {model_dir}/{name}; an ensemble's models "
                                       "must share labels and prompt")
        from .decoding import LabelTrie
        from .modeling import configure_runtime, load_model, load_tokenizer

        configure_runtime(None)
        info = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
        self.prompt = json.loads((model_dir / "prompt.json").read_text(encoding="utf-8"))
        self.trie = LabelTrie.build(info["labels"], info["token_ids"])
        self.longest_label = max(len(t) for t in info["token_ids"])
        self.tokenizer = load_tokenizer(model_dir)
        self.models = [load_model(folder) for folder in folders]
        self.top_k, self.batch_size = top_k, batch_size

    def predict(self, messages: list[str]):
        from .decoding import constrained_decode
        from .prompting import encode_prompt

        prompts = [encode_prompt(self.tokenizer, self.prompt["template"], m, self.prompt["max_length"],
                                 self.longest_label) for m in messages]
        if len(self.models) == 1:
            return constrained_decode(self.models[0], prompts, self.trie, self.batch_size, self.top_k,
                                      self.tokenizer.pad_token_id)
        from .ensembling import average_log_probs, label_log_probs, predictions_from

        scores = [label_log_probs(m, prompts, self.trie, self.batch_size, self.tokenizer.pad_token_id)
                  for m in self.models]
        return predictions_from(average_log_probs(scores), self.trie.labels, self.top_k)


def predict_command(args) -> int:
    messages = read_messages(args.messages, args.file)
    predictor = Predictor(args.model, top_k=args.top_k, members=args.member)
    for message, result in zip(messages, predictor.predict(messages)):
        if args.json:
            print(json.dumps({"text": message, "intent": result.label, "confidence": round(result.confidence, 6),
                              "top": [{"intent": l, "probability": round(p, 6)} for l, p in result.top]}))
        else:
            top = ", ".join(f"{l} {p:.3f}" for l, p in result.top)
            print(f"{result.label}\t{result.confidence:.3f}\t[{top}]\t{message}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m banking77_ft", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="classify messages with the fine-tuned model")
    predict.add_argument("messages", nargs="*", help="messages to classify")
    predict.add_argument("--file", type=Path, help="a text file (one message per line) or a CSV with `text`")
    predict.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    predict.add_argument("--member", type=Path, action="append", default=[],
                         help="another fine-tuned model to average with --model (an ensemble member)")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    check = commands.add_parser("check-lock", help="fail if dvc.lock is stale against params/code")
    check.add_argument("--repo", type=Path, default=Path("."))
    table = commands.add_parser("results-table", help="write README's results table from metrics/")
    table.add_argument("--metrics-dir", type=Path, default=Path("metrics"))
    table.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args(argv)
    try:
        if args.command == "predict":
            return predict_command(args)
        if args.command == "results-table":
            from .report import replace_block, results_table

            text = args.readme.read_text(encoding="utf-8")
            args.readme.write_text(replace_block(text, results_table(args.metrics_dir)), encoding="utf-8")
            return 0
        from .lockcheck import check_lock

        return check_lock(args.repo)
    except PredictError as exc:
        print(f"predict: error: {exc}", file=sys.stderr)
        return 2
