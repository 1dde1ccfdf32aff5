"""The whole pipeline through real `dvc repro`, on tiny-random with a few dozen examples."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline_repo import MEMBER, dvc, make_repo, ran_stages, run, set_params

ALL_STAGES = {"base", "prepare", "train", MEMBER, "evaluate", "plot", "baseline"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = make_repo(tmp_path_factory.mktemp("pipeline") / "repo")
    result = dvc(path, "repro")
    assert set(ran_stages(result.stdout)) == ALL_STAGES, result.stdout
    run(path, "git", "add", "-A")
    run(path, "git", "commit", "-qm", "results")
    return path


def test_outputs_exist_and_are_well_formed(repo):
    summary = json.loads((repo / "metrics/eval.json").read_text())
    assert summary["n"] == 40
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["invalid_rate"] == 0.0
    assert {"macro_f1", "weighted_f1", "examples_per_second", "ece"} <= set(summary)
    confusion = pd.read_csv(repo / "metrics/confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == 40
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["steps"] == 2 * 9  # 72 training rows (80 minus 10% validation) / batch 8, 2 epochs
    steps = pd.read_csv(repo / "metrics/train_loss.csv")
    assert steps["step"].tolist() == list(range(1, 19))
    assert len(pd.read_csv(repo / "metrics/val_loss.csv")) == 2  # once per epoch
    assert train["val_accuracy"] * 8 == round(train["val_accuracy"] * 8)  # a share of 8 validation rows
    for name in ("confusion", "loss", "per_class_f1", "reliability"):
        assert (repo / f"plots/{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for split, rows in (("train", 72), ("validation", 8), ("test", 40)):
        assert len(pd.read_parquet(repo / f"data/prepared/{split}.parquet")) == rows
    assert not (repo / "checkpoints/train").exists(), "checkpoints are removed after a finished run"
    assert json.loads((repo / "metrics/baseline.json").read_text())["n"] == 40
    # the ensemble: the member trained on the same rows with its own seed, both models scored
    member = json.loads((repo / "metrics/members/seed7/train.json").read_text())
    assert member["steps"] == train["steps"] and not (repo / "checkpoints/members/seed7").exists()
    assert (repo / "models/members/seed7/model.safetensors").exists()
    assert summary["models"] == 2 and set(summary["model_accuracy"]) == {"train", "seed7"}
    predictions = pd.read_csv(repo / "metrics/predictions.csv")
    assert (predictions["top1_p"] >= predictions["top2_p"]).all() and (predictions["top1_p"] <= 1).all()


def test_second_repro_is_a_no_op(repo):
    result = dvc(repo, "repro")
    assert ran_stages(result.stdout) == []
    assert "up to date" in dvc(repo, "status").stdout


def test_metrics_params_and_plots_commands_work(repo):
    shown = dvc(repo, "metrics", "show", "--json").stdout
    assert "accuracy" in shown
    set_params(repo, {"evaluate": {"top_k": 2}})
    assert "evaluate.top_k" in dvc(repo, "params", "diff").stdout
    out = dvc(repo, "plots", "show", "-o", str(repo / "plots_html")).stdout
    assert (repo / "plots_html/index.html").exists(), out
    html = (repo / "plots_html/index.html").read_text()
    assert "confusion" in html
    run(repo, "git", "checkout", "params.yaml")


def test_evaluate_param_reruns_only_evaluate_and_plot(repo):
    set_params(repo, {"evaluate": {"top_k": 2}})
    status = dvc(repo, "status", "--json").stdout
    assert set(json.loads(status)) == {"evaluate"}, status
    result = dvc(repo, "repro")
    # plot follows because evaluate's metrics changed; train, prepare, base, baseline do not run
    assert ran_stages(result.stdout) == ["evaluate", "plot"]
    assert "top2" in pd.read_csv(repo / "metrics/predictions.csv").columns
    assert "top3" not in pd.read_csv(repo / "metrics/predictions.csv").columns
    diff = dvc(repo, "metrics", "diff", "--json").stdout
    assert "metrics/eval.json" in diff
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "top2")


def test_learning_rate_reruns_train_evaluate_plot_not_base_or_prepare(repo):
    set_params(repo, {"train": {"learning_rate": 1e-3}})
    status = json.loads(dvc(repo, "status", "--json").stdout)
    # the member is the train recipe with overrides, so it follows train's params
    assert set(status) == {"train", MEMBER}, status  # downstream stages are reported once these rerun
    result = dvc(repo, "repro")
    ran = ran_stages(result.stdout)
    assert {"train", MEMBER, "evaluate", "plot"} <= set(ran)
    assert "base" not in ran and "prepare" not in ran and "baseline" not in ran
    assert ran_stages(dvc(repo, "repro").stdout) == []


def test_editing_or_adding_a_member_retrains_only_that_member(repo):
    set_params(repo, {"ensemble": {"members": {"seed7": {"seed": 8}}}})
    assert set(json.loads(dvc(repo, "status", "--json").stdout)) == {MEMBER, "evaluate"}
    assert ran_stages(dvc(repo, "repro").stdout) == [MEMBER, "evaluate", "plot"]
    set_params(repo, {"ensemble": {"members": {"seed7": {"seed": 8}, "lr": {"learning_rate": 5e-4}}}})
    assert ran_stages(dvc(repo, "repro").stdout) == ["member@lr", "evaluate", "plot"]
    assert json.loads((repo / "metrics/eval.json").read_text())["models"] == 3
    assert ran_stages(dvc(repo, "repro").stdout) == []


def test_a_missing_member_checkpoint_is_named_before_any_model_loads(repo, tmp_path):
    import subprocess
    import sys

    from pipeline_repo import env

    members = tmp_path / "members"
    members.mkdir()
    result = subprocess.run([sys.executable, "stages/evaluate.py", "--model", "models/finetuned", "--members",
                             str(members), "--test", "data/prepared/test.parquet", "--metrics-dir",
                             str(tmp_path / "metrics")], cwd=repo, env=env(), capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{members}/" in result.stderr and "no checkpoint for ensemble member" in result.stderr
    assert "(run its stage: dvc repro member@" in result.stderr and not (tmp_path / "metrics").exists()


def test_check_lock_names_the_stale_stage_and_passes_after_rerun(repo, tmp_path):
    import subprocess
    import sys

    from pipeline_repo import env

    def check(where):
        return subprocess.run([sys.executable, "-m", "banking77_ft", "check-lock"], cwd=where, env=env(),
                              capture_output=True, text=True)

    assert check(repo).returncode == 0
    clone = tmp_path / "clone"  # a clean clone has no DVC cache: absent models are not "stale"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert check(clone).returncode == 0, check(clone).stderr
    set_params(clone, {"evaluate": {"calibration_bins": 5}})
    result = check(clone)
    assert result.returncode == 1
    assert "stale stage 'evaluate'" in result.stderr and "calibration_bins" in result.stderr
    set_params(repo, {"evaluate": {"calibration_bins": 5}})
    assert "stale stage 'evaluate'" in check(repo).stderr
    dvc(repo, "repro")
    assert check(repo).returncode == 0


def test_refit_without_validation_split(repo):
    """data.val_fraction: 0 is the final refit on every training row: an empty validation
    split, no validation pass, a header-only validation log, and a README line that says so."""
    from banking77_ft.report import results_table

    set_params(repo, {"data": {"val_fraction": 0}})
    ran = ran_stages(dvc(repo, "repro").stdout)
    assert {"prepare", "train", "evaluate", "plot", "baseline"} <= set(ran) and "base" not in ran
    assert len(pd.read_parquet(repo / "data/prepared/train.parquet")) == 80
    assert len(pd.read_parquet(repo / "data/prepared/validation.parquet")) == 0
    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["steps"] == 2 * 10 and train["val_loss"] is None and train["val_accuracy"] is None
    val_log = pd.read_csv(repo / "metrics/val_loss.csv")
    assert list(val_log.columns) == ["step", "epoch", "val_loss"] and val_log.empty
    assert (repo / "plots/loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no validation split (`data.val_fraction: 0`)" in results_table(repo / "metrics")
    assert ran_stages(dvc(repo, "repro").stdout) == []
