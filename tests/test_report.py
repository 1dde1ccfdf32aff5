"""README's results table is exactly what the committed metrics files say; lock-check parsing."""

from __future__ import annotations

from pathlib import Path

from banking77_ft.lockcheck import stale_stages
from banking77_ft.report import END, START, replace_block, results_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_results_table_matches_committed_metrics():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == results_table(ROOT / "metrics").strip(), \
        "README's results table is stale: run `python -m banking77_ft results-table`"


def test_results_table_shows_an_ensemble_and_each_model_alone(tmp_path):
    import json
    import shutil

    shutil.copytree(ROOT / "metrics", tmp_path / "metrics", ignore=shutil.ignore_patterns("members"))
    evaluation = json.loads((tmp_path / "metrics/eval.json").read_text())
    evaluation.update(models=2, model_accuracy={"train": 0.9, "seed7": 0.8})
    (tmp_path / "metrics/eval.json").write_text(json.dumps(evaluation))
    member = tmp_path / "metrics/members/seed7/train.json"
    member.parent.mkdir(parents=True)
    member.write_text(json.dumps({"steps": 12, "seconds_per_step": 1.5, "wall_seconds": 90.0}))
    table = results_table(tmp_path / "metrics")
    assert "ensemble of 2 Gemma 3 270M full fine-tunes" in table
    assert "| └ its `train` model alone | 90.00 % |" in table and "| └ its `seed7` model alone | 80.00 % |" in table
    assert "Member `seed7`: 12 steps, 1.5 s/step, 1.5 min wall" in table


def test_replace_block_only_touches_the_block():
    text = f"a\n{START}\nold\n{END}\nb\n"
    assert replace_block(text, "new") == f"a\n{START}\nnew\n{END}\nb\n"


def test_stale_stages_ignores_absent_cache_but_not_changes():
    status = {
        "base": [{"changed outs": {"models/base": "not in cache"}}],
        "prepare": [{"changed deps": {"models/base/tokenizer.json": "deleted"}}],
        "train": [{"changed deps": {"src/banking77_ft/training.py": "modified", "models/base": "deleted"}}],
        "evaluate": [{"changed deps": {"params.yaml": {"evaluate.top_k": "modified"}}}],
        "plot": [{"changed outs": {"plots/loss.png": "modified"}}],
    }
    assert stale_stages(status) == {
        "train": ["dep src/banking77_ft/training.py modified"],
        "evaluate": ["param evaluate.top_k modified"],
        "plot": ["out plots/loss.png modified"],
    }
