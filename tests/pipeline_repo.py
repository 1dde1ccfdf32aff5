"""Build a throw-away git + DVC repository holding this project's pipeline, for tests that run
the real `dvc repro` on the tiny random model with a few dozen examples."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from banking77_ft.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "params.yaml", "stages", "src", "data/raw")

TINY_OVERRIDES = {
    # a validation split, whatever the committed default (the refit uses none)
    "data": {"max_train_examples": 80, "max_test_examples": 40, "val_fraction": 0.1},
    "model": {"base": "tiny-random"},
    "train": {"epochs": 2, "learning_rate": 2e-3, "checkpoint_every_steps": 2, "batch_size": 8},
    "evaluate": {"batch_size": 16},
    # whatever the committed members, one cheap member, so every pipeline test runs an ensemble
    "ensemble": {"members": {"seed7": {"seed": 7}}},
}
MEMBER = "member@seed7"


def env() -> dict:
    environment = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    environment["PATH"] = bin_dir + os.pathsep + environment.get("PATH", "")
    environment["PYTHONPATH"] = str(ROOT / "src")
    environment.setdefault("GIT_AUTHOR_NAME", "test")
    environment.setdefault("GIT_AUTHOR_EMAIL", "test@example.com")
    environment.setdefault("GIT_COMMITTER_NAME", "test")
    environment.setdefault("GIT_COMMITTER_EMAIL", "test@example.com")
    environment["DVC_NO_ANALYTICS"] = "1"
    return environment


def run(cwd: Path, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", "dvc", *args, check=check)


def set_params(repo: Path, overrides: dict) -> None:
    path = repo / "params.yaml"
    params = read_yaml(path)
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(target: Path, overrides: dict | None = None) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target / name)
    shutil.copy(ROOT / ".gitignore", target / ".gitignore")
    set_params(target, TINY_OVERRIDES)
    if overrides:
        set_params(target, overrides)
    run(target, "git", "init", "-q")
    dvc(target, "init", "-q")
    shutil.copy(ROOT / ".dvc/config", target / ".dvc/config")  # the project's cache settings
    run(target, "git", "add", "-A")
    run(target, "git", "commit", "-qm", "pipeline")
    return target


def ran_stages(output: str) -> list[str]:
    """Stage names that `dvc repro` actually executed, from its log."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]
