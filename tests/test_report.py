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
