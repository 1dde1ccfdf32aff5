"""Fail when the committed dvc.lock no longer describes params.yaml and the stage code.

Someone who edits a param or a stage without re-running and committing makes the committed
metrics a lie. `dvc status` says so, but on a clean clone it also reports every cached output
(models, prepared data) as deleted, because the DVC cache is not in git. This check keeps the
signal and drops that noise: changed params, and changed (not merely absent) deps and outs,
make it fail with the stale stage named.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .params import read_yaml

ABSENT = {"deleted", "not in cache"}


def stale_stages(status: dict) -> dict[str, list[str]]:
    """{stage: [reasons]} from `dvc status --json` output, ignoring outputs that are only absent."""
    stale: dict[str, list[str]] = {}
    for stage, entries in status.items():
        if not isinstance(entries, list):
            continue
        reasons = []
        for entry in entries:
            if not isinstance(entry, dict):
                reasons.append(str(entry))
                continue
            for params in entry.get("changed params", {}).values():
                reasons.extend(f"param {k} {v}" for k, v in params.items())
            for kind in ("changed deps", "changed outs"):
                for path, change in entry.get(kind, {}).items():
                    if isinstance(change, dict):  # DVC 3 reports params as {"params.yaml": {key: change}}
                        reasons.extend(f"param {k} {v}" for k, v in change.items())
                    elif change not in ABSENT:
                        reasons.append(f"{kind.split()[1][:-1]} {path} {change}")
        if reasons:
            stale[stage.split(":")[-1]] = reasons
    return stale


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def param_differences(repo: Path, stage: str) -> list[str]:
    """Which keys under the stage's params differ between dvc.lock and params.yaml, by name."""
    lock = read_yaml(repo / "dvc.lock") or {}
    locked = _flatten(lock.get("stages", {}).get(stage, {}).get("params", {}).get("params.yaml", {}))
    current_all = _flatten(read_yaml(repo / "params.yaml") or {})
    sections = {key.split(".")[0] for key in locked}
    current = {k: v for k, v in current_all.items() if k.split(".")[0] in sections}
    return [f"param {key}: {locked.get(key, '<absent>')!r} in dvc.lock, {current.get(key, '<absent>')!r} in params.yaml"
            for key in sorted(set(locked) | set(current)) if locked.get(key) != current.get(key)]


def check_lock(repo: Path = Path(".")) -> int:
    if not (repo / "dvc.lock").is_file():
        print("check-lock: dvc.lock is missing: run `dvc repro` and commit dvc.lock", file=sys.stderr)
        return 1
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=repo, capture_output=True,
                            text=True)
    if result.returncode != 0:
        print(f"check-lock: `dvc status` failed:\n{result.stderr}", file=sys.stderr)
        return 1
    stale = stale_stages(json.loads(result.stdout or "{}"))
    if not stale:
        print("check-lock: dvc.lock matches params.yaml and the stage code", file=sys.stderr)
        return 0
    for stage, reasons in stale.items():
        if any(r.startswith("param ") for r in reasons):  # name the exact keys, not just the section
            reasons = [r for r in reasons if not r.startswith("param ")] + param_differences(repo, stage)
        print(f"check-lock: stale stage '{stage}': " + "; ".join(reasons), file=sys.stderr)
    print("check-lock: re-run `dvc repro` and commit dvc.lock, metrics/ and plots/", file=sys.stderr)
    return 1
