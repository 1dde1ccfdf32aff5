"""What every stage entry point shares: load its params sections, and turn the project's own
errors into one clear line on stderr and a non-zero exit instead of a traceback."""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from .data import DataError
from .modeling import ModelSpecError
from .params import ParamsError, load_params
from .training import Interrupted, TrainingError

USER_ERRORS = (ParamsError, DataError, ModelSpecError, TrainingError, FileNotFoundError)


@contextlib.contextmanager
def run_stage(name: str, params_file: str, sections: tuple[str, ...]) -> Iterator[dict]:
    try:
        yield load_params(params_file, sections)
    except Interrupted as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(128 + exc.signum) from None
    except USER_ERRORS as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
