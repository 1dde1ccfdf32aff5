"""The `predict` command on a single message, a text file and a CSV; clear errors otherwise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from banking77_ft.cli import PredictError, main, read_messages
from banking77_ft.prompting import label_token_ids

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tiny_base, tmp_path_factory, labels):
    """A fine-tuned-model-shaped folder: the tiny model plus labels.json and prompt.json."""
    from banking77_ft.modeling import load_tokenizer

    folder = tmp_path_factory.mktemp("predict") / "finetuned"
    shutil.copytree(tiny_base, folder)
    tokenizer = load_tokenizer(tiny_base)
    (folder / "labels.json").write_text(json.dumps(
        {"labels": labels, "token_ids": [label_token_ids(tokenizer, l) for l in labels]}))
    (folder / "prompt.json").write_text(json.dumps({"template": "Banking customer message: {text}\nIntent:",
                                                    "max_length": 128}))
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "banking77_ft", *args], capture_output=True, text=True, cwd=ROOT)


def test_single_message(model_dir, labels):
    result = run_cli("predict", "--model", str(model_dir), "--json", "my card hasn't arrived yet")
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    record = json.loads(line)
    assert record["intent"] in labels and record["text"] == "my card hasn't arrived yet"
    assert len(record["top"]) == 3 and record["top"][0]["probability"] == record["confidence"]
    assert sum(t["probability"] for t in record["top"]) <= 1.0 + 1e-6


def test_text_file_and_csv(model_dir, tmp_path, capsys, labels):
    text_file = tmp_path / "messages.txt"
    text_file.write_text("where is my card\n\nexchange rate please\n")
    csv_file = tmp_path / "messages.csv"
    csv_file.write_text('id,text\n1,"I lost my card, help"\n2,top up failed\n3,refund?\n')
    assert main(["predict", "--model", str(model_dir), "--file", str(text_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.split("\t")[0] in labels for line in lines)
    assert main(["predict", "--model", str(model_dir), "--json", "--file", str(csv_file)]) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in records] == ["I lost my card, help", "top up failed", "refund?"]


def test_empty_input_is_a_clear_error(tmp_path, model_dir):
    with pytest.raises(PredictError, match="no message to classify"):
        read_messages(["  "], None)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    result = run_cli("predict", "--model", str(model_dir), "--file", str(empty))
    assert result.returncode == 2 and "no message to classify" in result.stderr
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("message\nhello\n")
    result = run_cli("predict", "--model", str(model_dir), "--file", str(bad_csv))
    assert result.returncode == 2 and "needs a `text` column" in result.stderr


def test_missing_model_is_a_clear_error(tmp_path):
    result = run_cli("predict", "--model", str(tmp_path / "nope"), "hello")
    assert result.returncode == 2
    assert "not a fine-tuned model" in result.stderr and "dvc repro" in result.stderr
    assert "Traceback" not in result.stderr


def test_ensemble_of_identical_members_predicts_like_the_model_alone(model_dir, tmp_path, capsys):
    twin = tmp_path / "twin"
    shutil.copytree(model_dir, twin)
    message = "my card hasn't arrived yet"
    # a beam as wide as the label set is exhaustive, as the ensemble's scoring is
    assert main(["predict", "--model", str(model_dir), "--json", "--top-k", "77", message]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main(["predict", "--model", str(model_dir), "--member", str(twin), "--json", "--top-k", "77", message]) == 0
    together = json.loads(capsys.readouterr().out)
    assert together["intent"] == alone["intent"]
    assert together["confidence"] == pytest.approx(alone["confidence"], rel=1e-3)
    assert [t["intent"] for t in together["top"][:5]] == [t["intent"] for t in alone["top"][:5]]


def test_ensemble_members_must_share_labels(model_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    info = json.loads((other / "labels.json").read_text())
    (other / "labels.json").write_text(json.dumps({**info, "labels": info["labels"][::-1]}))
    result = run_cli("predict", "--model", str(model_dir), "--member", str(other), "hello")
    assert result.returncode == 2 and f"{other}/labels.json: differs from" in result.stderr
