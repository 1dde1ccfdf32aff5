"""Every class of params mistake fails early with the key and the allowed values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from banking77_ft.params import ParamsError, TrainParams, load_params, read_yaml

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, mutate) -> Path:
    params = read_yaml(ROOT / "params.yaml")
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_committed_params_load_and_match_defaults():
    params = load_params(ROOT / "params.yaml")
    assert params["train"].method == "full" and params["train"].batch_size == 16
    assert params["train"].learning_rate == 5e-5 and params["train"].lr_scheduler == "cosine"


@pytest.mark.parametrize("mutate,message", [
    (lambda p: p["train"].update(lerning_rate=1e-4), "train.lerning_rate: unknown key"),
    (lambda p: p.update(trian={}), "unknown section 'trian'"),
    (lambda p: p["train"].update(batch_size="16"), "train.batch_size: got '16' (str); allowed: an integer"),
    (lambda p: p["train"].update(epochs=2.5), "train.epochs: got 2.5 (float); allowed: an integer"),
    (lambda p: p["train"].update(group_by_length="yes"), "train.group_by_length"),
    (lambda p: p["train"].update(learning_rate=0), "train.learning_rate: got 0.0; allowed: a number > 0"),
    (lambda p: p["train"].update(learning_rate=-1e-5), "train.learning_rate"),
    (lambda p: p["train"].update(batch_size=0), "train.batch_size: got 0; allowed: an integer >= 1"),
    (lambda p: p["data"].update(val_fraction=1.0), "data.val_fraction: got 1.0"),
    (lambda p: p["data"].update(val_fraction=-0.1), "data.val_fraction: got -0.1"),
    (lambda p: p["train"].update(precision="fp16"), "train.precision: got 'fp16'; allowed: one of ['fp32', 'bf16']"),
    (lambda p: p["train"].update(method="lora"), "train.method: got 'lora'; allowed: one of ['full']"),
    (lambda p: p["evaluate"].update(decoding="beam"), "evaluate.decoding: got 'beam'"),
    (lambda p: p["train"].update(lr_scheduler="cosin"), "train.lr_scheduler"),
    (lambda p: p["prompt"].update(template="no placeholder"), "prompt.template"),
    (lambda p: p["prompt"].update(template="{text} {other}"), "prompt.template: cannot be formatted"),
    (lambda p: p["train"].update(swa_start_fraction=1.0), "train.swa_start_fraction: got 1.0"),
    (lambda p: p["train"].update(swa_every_steps=0), "train.swa_every_steps: got 0"),
    (lambda p: p["ensemble"].update(members=["lr3e-5"]), "ensemble.members: got ['lr3e-5'] (list); allowed: a mapping"),
    (lambda p: p["ensemble"].update(members={"a b": {"seed": 7}}), "ensemble.members: got 'a b'"),
    (lambda p: p["ensemble"].update(members={"train": {"seed": 7}}), "ensemble.members: got 'train'"),
    (lambda p: p["ensemble"].update(members={"m": {}}), "ensemble.members.m: got {}; allowed: a non-empty mapping"),
    (lambda p: p["ensemble"].update(members={"m": {"lr": 1e-4}}), "ensemble.members.m.lr: unknown key"),
    (lambda p: p["ensemble"].update(members={"m": {"seed": "7"}}),
     "ensemble.members.m.seed: got '7' (str); allowed: an integer"),
])
def test_bad_params_name_the_key(tmp_path, mutate, message):
    with pytest.raises(ParamsError) as error:
        load_params(write(tmp_path, mutate))
    assert message in str(error.value)
    assert "params.yaml" in str(error.value)


def test_ensemble_member_is_the_train_recipe_with_its_overrides(tmp_path):
    params = load_params(write(tmp_path, lambda p: p["ensemble"].update(members={"m": {"seed": 7, "epochs": 2}})))
    train, recipe = params["train"], params["ensemble"].recipe("m", params["train"])
    assert (recipe.seed, recipe.epochs) == (7, 2)
    assert dataclasses.replace(recipe, seed=train.seed, epochs=train.epochs) == train  # nothing else moved
    with pytest.raises(ParamsError, match="ensemble.members.other: no such member"):
        params["ensemble"].recipe("other", train)


@pytest.mark.parametrize("overrides,message", [
    ({"seed": 42}, "as written it would train the same model again"),  # 42 is train.seed already
    ({"epochs": 0}, "ensemble.members.m.epochs: got 0; allowed: an integer >= 1"),
])
def test_ensemble_member_recipe_is_checked_against_train(tmp_path, overrides, message):
    params = load_params(write(tmp_path, lambda p: p["ensemble"].update(members={"m": overrides})))
    with pytest.raises(ParamsError, match=message):
        params["ensemble"].recipe("m", params["train"])


def test_unknown_model_base_fails_before_loading(tmp_path):
    from banking77_ft.modeling import ModelSpecError, resolve_base

    with pytest.raises(ModelSpecError, match="model.base: 'gemma-huge' is not a known model"):
        resolve_base("gemma-huge")
    with pytest.raises(ModelSpecError, match="not installed"):
        resolve_base("gguf:no-such-package-xyz")
    assert resolve_base("google/gemma-3-270m").kind == "hub"
    assert resolve_base("tiny-random").kind == "tiny-random"


def test_stage_turns_params_error_into_one_line_and_exit_2(tmp_path, capsys):
    import importlib.util

    path = write(tmp_path, lambda p: p["model"].update(base="gemma-huge"))
    spec = importlib.util.spec_from_file_location("base_stage", ROOT / "stages/base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--params", str(path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "model.base: 'gemma-huge' is not a known model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dataclass_defaults_are_the_reference_recipe_except_precision():
    defaults = TrainParams()
    assert (defaults.epochs, defaults.batch_size, defaults.learning_rate, defaults.lr_scheduler) == \
        (3, 16, 5e-5, "cosine")


@pytest.mark.parametrize("value", [3e-5, 5e-5, 2.5e-06])
def test_floats_written_by_dvc_read_as_numbers(tmp_path, value):
    """`dvc exp run -S train.learning_rate=3e-5` writes params.yaml through ruamel (YAML 1.2),
    which prints `3e-05`: no dot, so YAML 1.1 (PyYAML's default) would read a string."""
    from ruamel.yaml import YAML

    ruamel = YAML()
    params = ruamel.load((ROOT / "params.yaml").read_text())
    params["train"]["learning_rate"] = value
    path = tmp_path / "params.yaml"
    with path.open("w") as out:
        ruamel.dump(params, out)
    assert "e-0" in path.read_text()  # the dot-less form that tripped YAML 1.1
    assert load_params(path, ("train",))["train"].learning_rate == value
