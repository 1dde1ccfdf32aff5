"""Decoding speed, constrained vs free, side by side in one process on the same test messages.

    python bench/decode_speed.py                 # models/finetuned, 640 test messages
    python bench/decode_speed.py --n 3080        # the full test set

Prints messages/s for constrained decoding (label trie, restricted LM head, top-3) and free
greedy `generate`, the ratio, the share of invalid free generations, and agreement between
the two; writes JSON. The last line is exactly `constrained_vs_free=<ratio>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from banking77_ft.decoding import LabelTrie, constrained_decode, free_decode  # noqa: E402
from banking77_ft.modeling import configure_runtime, load_model, load_tokenizer  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models/finetuned")
    parser.add_argument("--test", type=Path, default=ROOT / "data/prepared/test.parquet")
    parser.add_argument("--n", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/decode_speed.json")
    args = parser.parse_args(argv)
    threads = configure_runtime(None)
    test = pd.read_parquet(args.test)
    test = test.iloc[:: max(1, len(test) // args.n)].head(args.n)  # spread over all intents
    info = json.loads((args.model / "labels.json").read_text())
    trie = LabelTrie.build(info["labels"], info["token_ids"])
    tokenizer, model = load_tokenizer(args.model), load_model(args.model)
    prompts = [list(ids[:n]) for ids, n in zip(test["input_ids"], test["prompt_length"])]
    longest = max(len(t) for t in info["token_ids"])

    t0 = time.perf_counter()
    constrained = constrained_decode(model, prompts, trie, args.batch_size, 3, tokenizer.pad_token_id)
    t_constrained = time.perf_counter() - t0
    t0 = time.perf_counter()
    free = free_decode(model, tokenizer, prompts, longest + 1, args.batch_size)
    t_free = time.perf_counter() - t0

    labels, actual = set(info["labels"]), test["label"].tolist()
    report = {
        "n": len(prompts), "threads": threads, "batch_size": args.batch_size,
        "constrained": {"seconds": round(t_constrained, 2), "messages_per_second": round(len(prompts) / t_constrained, 2),
                        "accuracy": round(sum(p.label == a for p, a in zip(constrained, actual)) / len(actual), 4)},
        "free": {"seconds": round(t_free, 2), "messages_per_second": round(len(prompts) / t_free, 2),
                 "accuracy": round(sum(f == a for f, a in zip(free, actual)) / len(actual), 4),
                 "invalid_rate": round(sum(f not in labels for f in free) / len(free), 4)},
        "agreement": round(sum(p.label == f for p, f in zip(constrained, free)) / len(free), 4),
    }
    report["constrained_vs_free"] = round(t_free / t_constrained, 3)
    args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    for key in ("constrained", "free"):
        r = report[key]
        print(f"{key:12s} {r['seconds']:8.1f} s  {r['messages_per_second']:7.2f} msg/s  accuracy {r['accuracy']:.4f}")
    print(f"free invalid rate {report['free']['invalid_rate']:.4f}; agreement {report['agreement']:.4f}")
    print(f"constrained_vs_free={report['constrained_vs_free']:.2f}")


if __name__ == "__main__":
    main()
