"""Stage `base`: resolve `model.base` and write an ordinary fp32 checkpoint to --out.

Reads params `model`. Writes `models/base/` (config.json, model.safetensors, tokenizer files),
once, as a cached DVC output, so that later stages load the model in seconds instead of
de-quantizing the GGUF file every time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from banking77_ft.io import atomic_dir
from banking77_ft.modeling import materialize_base, resolve_base, save_checkpoint_folder
from banking77_ft.stage import run_stage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    with run_stage("base", args.params, ("model",)) as params:
        spec = resolve_base(params["model"].base)  # a typo fails here, before any loading
        model, tokenizer = materialize_base(spec)
        n_params = sum(p.numel() for p in model.parameters())
        with atomic_dir(args.out) as tmp:
            save_checkpoint_folder(tmp, model, tokenizer)
        print(f"base: {spec.kind} {spec.target} -> {args.out} ({n_params / 1e6:.1f} M parameters)", file=sys.stderr)


if __name__ == "__main__":
    main()
