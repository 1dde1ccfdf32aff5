"""Training speed, side by side in ONE process on IDENTICAL batches of prepared Banking77 data.

    python bench/train_speed.py --steps 8                 # the real Gemma 3 270M
    python bench/train_speed.py --steps 2 --model tiny-random

Runs N optimizer steps (after one untimed warm-up step) of:
  (a) transformers.Trainer with the reference TrainingArguments (fp32, batch 16, lr 5e-5, cosine)
  (b) our loop in its default configuration (params.yaml `train`)
  (c) our loop in fp32
  (d) TRL SFTTrainer, prompt/completion data, completion-only loss, same hyper-parameters and
      precision as (b)
All four see the same examples in the same batches (our length-grouped order, fed to the
Trainers through a sequential sampler). Prints examples/s, ratios, peak RSS (sampled) and an
estimated model-FLOPs utilisation against a matmul peak measured here; writes JSON.
The last line is exactly `speedup_vs_trainer=<b / a>`.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from banking77_ft.modeling import configure_runtime, load_model, load_tokenizer, materialize_base, resolve_base  # noqa: E402
from banking77_ft.params import load_params  # noqa: E402
from banking77_ft.prompting import encode_example, format_prompt  # noqa: E402
from banking77_ft.training import (Examples, build_optimizer, collate, epoch_batches,  # noqa: E402
                                   forward_backward, prepare_model_for_method)


class PeakRss:
    """Samples this process's RSS every 20 ms; `peak` is the max seen while active."""

    def __init__(self):
        self.process, self.peak, self._stop = psutil.Process(), 0, threading.Event()

    def __enter__(self):
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def model_flops(model, batches, examples: Examples) -> float:
    """Useful FLOPs of the measured steps: 6 x non-embedding params x real tokens, plus the
    LM head (6 x hidden x vocab) on label positions only, the same numerator for every method."""
    embed = model.get_input_embeddings().weight
    body_params = sum(p.numel() for p in model.parameters()) - embed.numel()
    tokens = sum(int(examples.lengths[b].sum()) for b in batches)
    label_tokens = sum(int(sum((examples.labels[i] != -100).sum() for i in b)) for b in batches)
    return 6.0 * body_params * tokens + 6.0 * embed.numel() * label_tokens


def time_our_loop(model, batches, examples, precision, train_params, pad_id) -> list[float]:
    model = prepare_model_for_method(model, "full")
    optimizer = build_optimizer(model, train_params)
    times = []
    for indices in batches:
        t0 = time.perf_counter()
        forward_backward(model, collate(examples, indices, pad_id), precision)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self._t0 = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self._t0)

    return StepTimer()


def _sequential(trainer_cls):
    """The Trainers shuffle by default; a sequential sampler feeds them our exact batches."""
    from torch.utils.data import SequentialSampler

    class Sequential(trainer_cls):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    return Sequential


def time_hf_trainer(model, tokenizer, order, examples, steps, out_dir) -> list[float]:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    dataset = Dataset.from_dict({"input_ids": [examples.input_ids[i].tolist() for i in order],
                                 "labels": [examples.labels[i].tolist() for i in order]})
    args = TrainingArguments(output_dir=out_dir, per_device_train_batch_size=16, learning_rate=5e-5,
                             lr_scheduler_type="cosine", num_train_epochs=3, max_steps=steps, use_cpu=True,
                             report_to=[], save_strategy="no", logging_strategy="no", seed=42,
                             dataloader_num_workers=0, disable_tqdm=True)
    timer = _step_timer()
    trainer = _sequential(Trainer)(model=model, args=args, train_dataset=dataset, callbacks=[timer],
                                   data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True))
    trainer.train()
    return timer.times


def time_trl(model, tokenizer, order, texts, labels, template, steps, bf16, out_dir) -> list[float]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_dict({"prompt": [format_prompt(template, texts[i]) for i in order],
                                 "completion": [" " + labels[i] for i in order]})
    args = SFTConfig(output_dir=out_dir, per_device_train_batch_size=16, learning_rate=5e-5,
                     lr_scheduler_type="cosine", max_steps=steps, use_cpu=True, bf16=bf16, report_to=[],
                     save_strategy="no", logging_strategy="no", seed=42, completion_only_loss=True,
                     packing=False, max_length=128, dataloader_num_workers=0, disable_tqdm=True)
    timer = _step_timer()
    trainer = _sequential(SFTTrainer)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                      callbacks=[timer])
    trainer.train()
    return timer.times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model", choices=("real", "tiny-random"), default="real")
    parser.add_argument("--base", type=Path, default=ROOT / "models/base", help="materialized real model")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/train_speed.json")
    parser.add_argument("--skip", nargs="*", default=[], help="configs to skip: trainer ours ours_fp32 trl")
    args = parser.parse_args(argv)

    threads = configure_runtime(None)
    params = load_params(ROOT / "params.yaml", ("prompt", "train"))
    prompt, train_params = params["prompt"], params["train"]
    if args.model == "real":
        if not (args.base / "config.json").is_file():
            sys.exit(f"{args.base}: no materialized base model; run `dvc repro base` first")
        tokenizer, load = load_tokenizer(args.base), (lambda: load_model(args.base))
    else:
        base_model, tokenizer = materialize_base(resolve_base("tiny-random"))
        load = lambda: copy.deepcopy(base_model)  # noqa: E731

    # Real Banking77 rows, tokenized exactly as prepare does; batches in our length-grouped order.
    frame = pd.read_csv(ROOT / "data/raw/banking77/train.csv").sample(n=16 * (args.steps + 1) * 4, random_state=0)
    texts, labels = frame["text"].tolist(), frame["category"].tolist()
    encoded = [encode_example(tokenizer, prompt.template, t, l, prompt.max_length) for t, l in zip(texts, labels)]
    examples = Examples([np.array(e.input_ids) for e in encoded], [np.array(e.labels) for e in encoded])
    batches = [b for b in epoch_batches(examples.lengths, 16, 42, 0, train_params.group_by_length)
               if len(b) == 16][: args.steps + 1]  # +1: the first step of each run is warm-up
    order = np.concatenate(batches)
    pad_id = tokenizer.pad_token_id

    peaks = {"fp32": matmul_peak_gflops(torch.float32), "bf16": matmul_peak_gflops(torch.bfloat16)}
    print(f"matmul peak (2048^2, {threads} threads): fp32 {peaks['fp32']:.0f} GFLOP/s, "
          f"bf16 {peaks['bf16']:.0f} GFLOP/s", flush=True)
    runs = {
        "trainer": ("transformers.Trainer, reference args (fp32)", "fp32",
                    lambda m, d: time_hf_trainer(m, tokenizer, order, examples, args.steps + 1, d)),
        "ours": (f"ours, default ({train_params.precision})", train_params.precision,
                 lambda m, d: time_our_loop(m, batches, examples, train_params.precision, train_params, pad_id)),
        "ours_fp32": ("ours, fp32", "fp32",
                      lambda m, d: time_our_loop(m, batches, examples, "fp32", train_params, pad_id)),
        "trl": (f"TRL SFTTrainer, completion-only ({train_params.precision})", train_params.precision,
                lambda m, d: time_trl(m, tokenizer, order, texts, labels, prompt.template, args.steps + 1,
                                      train_params.precision == "bf16", d)),
    }
    results = {}
    for key, (title, precision, run) in runs.items():
        if key in args.skip:
            continue
        model = load()
        flops = model_flops(model, batches[1:], examples)
        with tempfile.TemporaryDirectory() as scratch, PeakRss() as rss:
            times = run(model, scratch)
        measured = times[1:]  # drop warm-up
        seconds = sum(measured)
        results[key] = {
            "title": title, "precision": precision, "steps": len(measured),
            "seconds_per_step": round(seconds / len(measured), 3),
            "examples_per_second": round(16 * len(measured) / seconds, 3),
            "peak_rss_gib": round(rss.peak / 2**30, 3),
            "mfu": round(flops / seconds / 1e9 / peaks[precision], 4),
        }
        print(f"{title:55s} {results[key]['seconds_per_step']:7.2f} s/step "
              f"{results[key]['examples_per_second']:7.2f} ex/s  peak RSS {results[key]['peak_rss_gib']:.2f} GiB  "
              f"MFU {results[key]['mfu']:.1%}", flush=True)
        del model
        gc.collect()

    ratios = {}
    base = results.get("trainer", {}).get("examples_per_second")
    for key in ("ours", "ours_fp32", "trl"):
        if base and key in results:
            ratios[f"{key}_vs_trainer"] = round(results[key]["examples_per_second"] / base, 3)
    if "ours" in results and "trl" in results:
        ratios["ours_vs_trl"] = round(results["ours"]["examples_per_second"] / results["trl"]["examples_per_second"], 3)
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    report = {"model": args.model, "steps": args.steps, "threads": threads, "matmul_peak_gflops": peaks,
              "mean_tokens_per_example": round(float(examples.lengths[order].mean()), 2),
              "results": results, "ratios": ratios}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"speedup_vs_trainer={ratios.get('ours_vs_trainer', float('nan')):.2f}")


if __name__ == "__main__":
    main()
