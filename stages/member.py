"""Stage `member@<name>`: train one ensemble member, the `train` recipe with the overrides in
`ensemble.members.<name>`.

Reads params `train` and `ensemble`; takes the same data, base model and output arguments as
`stages/train.py`, and writes the same kinds of files (a self-contained checkpoint folder, loss
CSVs, a metrics JSON, resumable checkpoints). The training itself *is* the train stage: the
member's merged recipe is written to a one-section params file that `stages/train.py` reads,
so a member cannot drift from the way the main model is trained.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

import train as train_stage  # stages/train.py: this script's folder is first on sys.path
from banking77_ft.params import as_dict
from banking77_ft.stage import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--name", required=True, help="the member's key under ensemble.members")
    args, train_args = parser.parse_known_args(argv)
    with run_stage(f"member@{args.name}", args.params, ("train", "ensemble")) as params:
        recipe = params["ensemble"].recipe(args.name, params["train"])
    with tempfile.TemporaryDirectory(prefix="member-params-") as folder:
        recipe_file = Path(folder) / "params.yaml"
        recipe_file.write_text(yaml.safe_dump({"train": as_dict(recipe)}, sort_keys=False), encoding="utf-8")
        print(f"member@{args.name}: the train recipe with {params['ensemble'].members[args.name]}", file=sys.stderr)
        train_stage.main(["--params", str(recipe_file), *train_args])


if __name__ == "__main__":
    main()
