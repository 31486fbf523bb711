"""The PipelineModule equivalent: read an input JSON, validate it, run, write an output JSON.

A stage module defines::

    class Inputs(pydantic.BaseModel): ...
    def run(inputs: Inputs) -> dict: ...
    if __name__ == "__main__":
        main_for(Inputs, run, "stage description")

Malformed input (unreadable JSON, a missing or wrongly typed field) exits with status 2 and one clear
message listing every problem; an :class:`~release_platform.errors.InputError` raised by the stage exits
with status 1 and its message. The output JSON is written atomically: NaN becomes ``null``, numpy
scalars and arrays become plain JSON values, paths become strings.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import pydantic

from release_platform.errors import InputError, validate_model
from release_platform.storage import atomic_path

M = TypeVar("M", bound=pydantic.BaseModel)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, pydantic.BaseModel):
        return _jsonable(value.model_dump(mode="json"))
    return value


def write_output_json(path: str | os.PathLike, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=True, allow_nan=False) + "\n")


def load_inputs(model: type[M], path: str | os.PathLike) -> M:
    """Read and validate an input JSON; raise InputError naming the file and every bad field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("input JSON not found", path=path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"input JSON is unreadable: {exc}", path=path) from None
    if not isinstance(raw, dict):
        raise InputError(f"input JSON must be an object, got {type(raw).__name__}", path=path)
    return validate_inputs(model, raw, source=path)


def validate_inputs(model: type[M], raw: dict, source: str | os.PathLike | None = None) -> M:
    return validate_model(model, raw, path=source)


def main_for(
    model: type[M],
    run: Callable[[M], dict],
    description: str,
    argv: Sequence[str] | None = None,
) -> int:
    """Command-line entry point shared by every stage; returns the exit status."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input_json", required=True, help="path of the input JSON")
    parser.add_argument("--output_json", required=True, help="path where the output JSON is written")
    parser.add_argument("--log_level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s:%(levelname)s:%(message)s")
    try:
        inputs = load_inputs(model, args.input_json)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        output = run(inputs)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_output_json(args.output_json, {"input_json": os.fspath(args.input_json), **output})
    return 0
