"""Reading Banking77 from each kind of source, and every data mistake as a clear error."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pandas as pd
import pytest

from banking77_ft.data import (DataError, count_overlap, read_source, split_validation, stratified_sample)

RAW = Path(__file__).resolve().parents[1] / "data/raw/banking77"


@pytest.fixture()
def folder(tmp_path) -> Path:
    target = tmp_path / "banking77"
    shutil.copytree(RAW, target)
    for f in target.iterdir():
        f.chmod(0o644)
    return target


def test_reads_the_committed_copy():
    data = read_source(str(RAW))
    assert len(data.train) == 10003 and len(data.test) == 3080 and len(data.labels) == 77
    assert list(data.train.columns) == ["text", "category"]
    assert data.test["category"].value_counts().eq(40).all()


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="data.source: folder .*nowhere.* does not exist"):
        read_source(str(tmp_path / "nowhere"))


def test_missing_file(folder):
    (folder / "test.csv").unlink()
    with pytest.raises(DataError, match=r"test\.csv: file not found"):
        read_source(str(folder))


def test_missing_columns(folder):
    (folder / "train.csv").write_text("message,intent\nhello,card_arrival\n")
    with pytest.raises(DataError, match=r"train\.csv: missing column\(s\) \['text', 'category'\]"):
        read_source(str(folder))


def test_empty_message_names_the_row(folder):
    lines = (folder / "train.csv").read_text().splitlines()
    lines[5] = '"   ",card_arrival'
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.csv: row 5 has an empty message"):
        read_source(str(folder))


def test_label_outside_the_set_names_the_row(folder):
    with open(folder / "test.csv", "a") as handle:
        handle.write("where is my money,where_is_my_money\n")
    with pytest.raises(DataError, match=r"test\.csv: row 3081 has label 'where_is_my_money', which is not one of the 77"):
        read_source(str(folder))


def test_non_utf8_names_the_line(folder):
    raw = (folder / "train.csv").read_bytes().split(b"\n")
    raw[3] = b"caf\xe9 card,card_arrival"
    (folder / "train.csv").write_bytes(b"\n".join(raw))
    with pytest.raises(DataError, match=r"train\.csv: not valid UTF-8 at line 4 \(row 3\)"):
        read_source(str(folder))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def server(folder):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()


def test_http_source_downloads_and_checks_hashes(server):
    url, _ = server
    data = read_source(url)
    assert len(data.train) == 10003 and len(data.test) == 3080


def test_http_source_refuses_an_altered_file(server):
    url, folder = server
    with open(folder / "test.csv", "a") as handle:
        handle.write("extra row,card_arrival\n")
    with pytest.raises(DataError, match=r"test\.csv: SHA-256 .* does not match the published file"):
        read_source(url)


def test_http_source_unreachable():
    with pytest.raises(DataError, match="download failed"):
        read_source("http://127.0.0.1:9/banking77")


def test_stratified_sample_is_seeded_and_covers_intents():
    frame = read_source(str(RAW)).train
    a = stratified_sample(frame, 770, seed=1)
    b = stratified_sample(frame, 770, seed=1)
    assert a.equals(b) and len(a) == 770
    assert a["category"].nunique() == 77
    small = stratified_sample(frame, 40, seed=1)
    assert len(small) == 40 and small["category"].nunique() == 40  # round-robin: one per intent


def test_validation_split_is_stratified_and_disjoint():
    frame = read_source(str(RAW)).train
    fit, val = split_validation(frame, 0.1, seed=42)
    assert len(fit) + len(val) == len(frame) and len(val) == 1000
    assert val["category"].nunique() == 77
    shares = frame["category"].value_counts(normalize=True)
    assert (val["category"].value_counts(normalize=True) - shares).abs().max() < 0.01


def test_zero_validation_fraction_keeps_every_row_for_training():
    frame = read_source(str(RAW)).train
    fit, val = split_validation(frame, 0.0, seed=42)
    assert fit.equals(frame.reset_index(drop=True))
    assert val.empty and list(val.columns) == list(frame.columns)


def test_overlap_is_counted():
    data = read_source(str(RAW))
    assert count_overlap(data.train, data.test) == int(data.test["text"].isin(set(data.train["text"])).sum())
    toy = pd.DataFrame({"text": ["a", "b"], "category": ["x", "y"]})
    assert count_overlap(toy, pd.DataFrame({"text": ["b", "c"], "category": ["y", "x"]})) == 1


def test_prepare_stage_reports_bad_data_in_one_line_and_writes_nothing(folder, tmp_path, capsys):
    import importlib.util

    (folder / "train.csv").write_text("text,category\nhello,not_an_intent\n")
    params = tmp_path / "params.yaml"
    params.write_text(f"data: {{source: {folder}}}\n")
    spec = importlib.util.spec_from_file_location("prepare_stage", RAW.parents[2] / "stages/prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--params", str(params), "--base", str(tmp_path / "unused"), "--out", str(tmp_path / "prepared")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "train.csv: row 1 has label 'not_an_intent'" in err and "Traceback" not in err
    assert not (tmp_path / "prepared").exists()
