"""Does averaging fine-tunes help, measured on the validation split only?

    python experiments/ensemble_validation.py --data /tmp/prep-val --exp lr3e-5 --exp swa --exp bs8 ...

--data is a `prepare` output made with `data.val_fraction: 0.1` (the split the candidates were
chosen on); each --exp names a `dvc exp run` experiment whose `models/finetuned` is still in the
DVC cache (it is linked out of the cache into --work, nothing is retrained), or --model
NAME=FOLDER gives a checkpoint directly. Every model scores all 77 labels of every validation
message (`ensembling.label_log_probs`, cached as .npy in --work so a rerun only adds new models);
then every subset of two or more models is scored with both averages, of log-probabilities and
of probabilities. Prints one line per subset size and writes the whole table as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from banking77_ft.decoding import LabelTrie, prompt_ids  # noqa: E402
from banking77_ft.ensembling import average_log_probs, label_log_probs  # noqa: E402
from banking77_ft.modeling import configure_runtime, load_model, load_tokenizer  # noqa: E402
from banking77_ft.params import YamlLoader  # noqa: E402


def experiment_model(name: str, work: Path) -> Path:
    """Link an experiment's models/finetuned out of the DVC cache (hard links: no copy)."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.split()
    matches = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    if len(matches) != 1:
        raise SystemExit(f"--exp {name}: {len(matches)} experiments with that name (see `dvc exp list -A`)")
    lock = yaml.load(subprocess.run(["git", "show", f"{matches[0]}:dvc.lock"], cwd=ROOT, check=True,
                                         capture_output=True, text=True).stdout, Loader=YamlLoader)
    (out,) = [o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/finetuned"]
    cache = ROOT / ".dvc/cache/files/md5"
    listing = cache / out["md5"][:2] / out["md5"][2:]
    if not listing.exists():
        raise SystemExit(f"--exp {name}: its model {out['md5']} is no longer in the DVC cache")
    folder = work / "models" / name
    for entry in json.loads(listing.read_text()):
        target = folder / entry["relpath"]
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(cache / entry["md5"][:2] / entry["md5"][2:], target)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="prepare output with a validation split")
    parser.add_argument("--exp", action="append", default=[], help="a dvc experiment name")
    parser.add_argument("--model", action="append", default=[], help="NAME=FOLDER")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ensemble-validation"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/ensemble_validation.json")
    args = parser.parse_args(argv)
    validation = pd.read_parquet(args.data / "validation.parquet")
    if validation.empty:
        raise SystemExit(f"{args.data}/validation.parquet is empty: prepare it with data.val_fraction > 0")
    info = json.loads((args.data / "labels.json").read_text())
    labels = info["labels"]
    trie = LabelTrie.build(labels, info["token_ids"])
    actual = np.array([labels.index(a) for a in validation["label"]])
    models = {name: None for name in args.exp}
    models.update(dict(item.split("=", 1) for item in args.model))
    configure_runtime(None)
    scores = {}
    for name, folder in models.items():
        cached = args.work / "scores" / f"{name}.npy"
        if not cached.exists():
            folder = Path(folder) if folder else experiment_model(name, args.work)
            tokenizer = load_tokenizer(folder)
            matrix = label_log_probs(load_model(folder), prompt_ids(validation), trie, args.batch_size,
                                     tokenizer.pad_token_id)
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, matrix)
        scores[name] = np.load(cached)
        if scores[name].shape != (len(validation), len(labels)):
            raise SystemExit(f"{cached}: scored another split ({scores[name].shape}); delete it to rescore")

    def accuracy(matrix: np.ndarray) -> float:
        return round(float((matrix.argmax(axis=1) == actual).mean()), 4)

    rows = []
    for size in range(1, len(scores) + 1):
        for subset in itertools.combinations(sorted(scores), size):
            members = [scores[n] for n in subset]
            rows.append({"models": list(subset), "size": size,
                         "mean_single_accuracy": round(float(np.mean([accuracy(m) for m in members])), 4),
                         "log_prob_average": accuracy(average_log_probs(members)),
                         "prob_average": accuracy(np.mean([np.exp(m) for m in members], axis=0))})
    table = pd.DataFrame(rows)
    summary = table.groupby("size")[["mean_single_accuracy", "log_prob_average", "prob_average"]].mean().round(4)
    print(summary.to_string())
    args.out.write_text(json.dumps({"n": len(validation), "subsets": rows,
                                    "by_size": summary.reset_index().to_dict(orient="records")}, indent=2) + "\n")


if __name__ == "__main__":
    main()
