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

An output never overwrites an input (:func:`check_outputs`, before the stage runs, status 2): the outputs are the
values of the fields named ``output_file`` / ``output_path`` / ``output_dir`` / ``output_json`` (or the model's
``OUTPUT_KEYS``, at any depth), the paths its ``output_paths()`` method returns, and ``--output_json``; every other
string of the input JSON naming an existing file is an input, and so is the input JSON itself. Paths are compared
as files (``..``, symlinks and hard links included).

A full disk or any other operating-system error (``OSError``) and an unreachable LIMS
(:class:`~release_platform.lims.client.LimsUnavailableError`) are reported in one line (``error: <file>: <problem>``)
with status 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import pydantic

from release_platform.errors import InputError, validate_model
from release_platform.jsonio import write_output_json  # noqa: F401 - the harness writes every output JSON with it

M = TypeVar("M", bound=pydantic.BaseModel)


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


DEFAULT_OUTPUT_KEYS = frozenset({"output_file", "output_path", "output_dir", "output_json"})


def _strings(value: Any, loc: str, skip: frozenset[str]) -> Iterator[tuple[str, str]]:
    """(location, string) for every string in a JSON value, leaving out the values of ``skip`` keys."""
    if isinstance(value, str):
        yield loc, value
    elif isinstance(value, dict):
        for key, item in value.items():
            if str(key) not in skip:
                yield from _strings(item, f"{loc}.{key}" if loc else str(key), skip)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _strings(item, f"{loc}[{i}]", skip)


def _outputs(value: Any, loc: str, keys: frozenset[str]) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{loc}.{key}" if loc else str(key)
            if str(key) in keys and isinstance(item, str):
                yield here, item
            else:
                yield from _outputs(item, here, keys)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _outputs(item, f"{loc}[{i}]", keys)


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_outputs(inputs: pydantic.BaseModel, *, output_json: str | os.PathLike | None = None,
                  input_json: str | os.PathLike | None = None) -> None:
    """InputError if any output of the stage is the same file as any of its inputs (see the module docstring)."""
    keys = frozenset(getattr(type(inputs), "OUTPUT_KEYS", DEFAULT_OUTPUT_KEYS))
    dumped = inputs.model_dump(mode="json")
    outputs = list(_outputs(dumped, "", keys))
    method = getattr(inputs, "output_paths", None)
    if callable(method):
        outputs += [("output", os.fspath(p)) for p in method()]
    if output_json is not None:
        outputs.append(("--output_json", os.fspath(output_json)))
    existing = [(label, path) for label, path in outputs if os.path.isfile(path)]
    if not existing:
        return
    candidates = [(loc, text) for loc, text in _strings(dumped, "", keys) if "\x00" not in text and os.path.isfile(text)]
    if input_json is not None:
        candidates.append(("--input_json", os.fspath(input_json)))
    for label, out in existing:
        for loc, inp in candidates:
            if _same_file(out, inp):
                also = loc if inp == out else f"{loc}: {inp}"
                raise InputError(f"{label} {out} is also an input ({also}); an output never overwrites an input")


def _one_line(exc: BaseException) -> str:
    """An OSError as ``<file>: <problem>`` (errno name included); anything else as its message."""
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else None
        text = f"{where}: {exc.strerror}" if where is not None else exc.strerror
        return text if exc.errno is None else f"{text} ({errno.errorcode.get(exc.errno, exc.errno)})"
    return " ".join(str(exc).split()) or type(exc).__name__


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
    from release_platform.lims.client import LimsUnavailableError

    try:
        inputs = load_inputs(model, args.input_json)
        check_outputs(inputs, output_json=args.output_json, input_json=args.input_json)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        output = run(inputs)
        write_output_json(args.output_json, {"input_json": os.fspath(args.input_json), **output})
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, LimsUnavailableError) as exc:  # a full disk, an unreadable file, an unreachable LIMS
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0
