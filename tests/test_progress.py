"""Progress lines in a captured log: first and last positions always, otherwise at most one per period."""

from __future__ import annotations

from banking77_ft import progress as progress_module
from banking77_ft.progress import Progress


def test_captured_output_prints_first_last_and_periodic_lines(capsys, monkeypatch):
    clock = iter([0.0] + [float(t) for t in range(1, 12)])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    bar = Progress("train", total=13, unit="step", start=2, every_seconds=5)  # resumed at step 2
    for _ in range(11):
        bar.advance(1, "loss 0.5000")
    lines = capsys.readouterr().err.splitlines()
    # t=1 (first step after resuming), t=6 (5 s later), t=11 (the last step)
    assert [line.split()[2] for line in lines] == ["3/13", "8/13", "13/13"]
    assert lines[0] == "train: step 3/13 loss 0.5000 1.00s/step eta 0m10s"
    assert lines[-1].endswith("eta 0m00s")


def test_fast_units_are_reported_per_second(capsys, monkeypatch):
    clock = iter([0.0, 0.5])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    Progress("evaluate", total=100, unit="message").advance(20)
    assert capsys.readouterr().err.strip() == "evaluate: message 20/100 40.0 messages/s eta 0m02s"
