"""Stage `train`: fully fine-tune the base model on the prepared examples.

Reads params `train`; `data/prepared/{train,validation}.parquet`, `labels.json`, `prompt.json`;
the base checkpoint. Writes the fine-tuned checkpoint to --out (with labels.json and
prompt.json, so it is self-contained for `predict`), per-step train loss and per-epoch
validation loss CSVs (DVC plots), and a metrics JSON with validation loss and accuracy, the
selection metrics (of the saved model: the weight average when `train.swa_start_fraction` is
set, with the last iterate's figures beside it). Checkpoints go to --checkpoints, outside
DVC's outputs, so a killed run resumes on the next `dvc repro`; they are deleted on success.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from banking77_ft.decoding import accuracy_on
from banking77_ft.io import atomic_dir, write_csv, write_json
from banking77_ft.modeling import configure_runtime, load_model, load_tokenizer, save_checkpoint_folder
from banking77_ft.stage import run_stage
from banking77_ft.training import Examples, evaluate_loss, peak_rss_gib, run_fingerprint, train


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--base", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--metrics", required=True, type=Path)
    parser.add_argument("--train-log", required=True, type=Path)
    parser.add_argument("--val-log", required=True, type=Path)
    parser.add_argument("--checkpoints", required=True, type=Path)
    args = parser.parse_args(argv)
    with run_stage("train", args.params, ("train",)) as params:
        config = params["train"]
        threads = configure_runtime(config.num_threads)
        train_frame = pd.read_parquet(args.data / "train.parquet")
        val_frame = pd.read_parquet(args.data / "validation.parquet")
        fingerprint = run_fingerprint(config, [args.data / "train.parquet", args.data / "validation.parquet",
                                               args.base / "config.json", args.base / "model.safetensors"])
        tokenizer = load_tokenizer(args.base)
        model = load_model(args.base)
        print(f"train: {len(train_frame)} examples, {len(val_frame) or 'no'} validation, {config.precision}, "
              f"{threads} threads", file=sys.stderr)
        result = train(model, Examples.from_frame(train_frame), Examples.from_frame(val_frame), config,
                       pad_token_id=tokenizer.pad_token_id, checkpoint_dir=args.checkpoints,
                       fingerprint=fingerprint, eval_batch_size=config.batch_size)
        state = result.state
        # Validation accuracy, the selection metric next to validation loss (`dvc exp show`).
        label_info = json.loads((args.data / "labels.json").read_text(encoding="utf-8"))

        def val_accuracy_of_model() -> float | None:
            return (accuracy_on(model, val_frame, label_info, config.batch_size, tokenizer.pad_token_id)
                    if len(val_frame) else None)

        val_loss = state.val_log[-1]["val_loss"] if state.val_log else None
        averaging = None
        if result.average is not None:
            # the last iterate's figures first (the model holds it until copy_to), so one run
            # compares averaging with not averaging on the same trajectory
            averaging = {"snapshots": len(result.average.snapshot_steps),
                         "first_snapshot_step": result.average.snapshot_steps[0],
                         "last_iterate_val_loss": val_loss,
                         "last_iterate_val_accuracy": _rounded(val_accuracy_of_model())}
            result.average.copy_to(model)
            if len(val_frame):
                val_loss = round(evaluate_loss(model, Examples.from_frame(val_frame), config.batch_size,
                                               tokenizer.pad_token_id, config.precision), 6)
        val_accuracy = val_accuracy_of_model()
        with atomic_dir(args.out) as tmp:
            save_checkpoint_folder(tmp, model, tokenizer)
            for name in ("labels.json", "prompt.json"):
                shutil.copyfile(args.data / name, tmp / name)
        write_csv(args.train_log, pd.DataFrame(state.train_log))
        # the header is written even without a validation split, so the plot readers still parse it
        write_csv(args.val_log, pd.DataFrame(state.val_log, columns=["step", "epoch", "val_loss"]))
        tail = state.train_log[-max(1, len(state.train_log) // 10):]
        write_json(args.metrics, {
            "steps": state.step,
            "train_loss_last_10pct": round(sum(r["loss"] for r in tail) / len(tail), 5),
            "val_loss": val_loss,
            "val_accuracy": _rounded(val_accuracy),
            "weight_averaging": averaging,
            "examples_per_second": round(state.examples_seen / max(state.step_seconds, 1e-9), 3),
            "seconds_per_step": round(state.step_seconds / max(state.step, 1), 3),
            "wall_seconds": round(result.wall_seconds, 1),
            "peak_rss_gib": round(peak_rss_gib(), 3),
            "resumed_from_step": result.resumed_from,
            "threads": threads,
        })
        shutil.rmtree(args.checkpoints, ignore_errors=True)


if __name__ == "__main__":
    main()
