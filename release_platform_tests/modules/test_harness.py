"""The module harness: good input, malformed input, atomic output, JSON conversion."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydantic
import pytest

from release_platform.errors import InputError
from release_platform.modules._harness import main_for, write_output_json


class _Inputs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    path: str
    factor: pydantic.PositiveFloat = 2.0


def _run(args: _Inputs) -> dict:
    p = Path(args.path)
    if not p.exists():
        raise InputError("file is missing", path=p)
    values = np.array([float(x) for x in p.read_text().split()]) * args.factor
    return {"values": values, "mean": values.mean(), "nan": math.nan, "count": np.int64(len(values))}


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "in.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_good_input_writes_output_json(tmp_path):
    (tmp_path / "v.txt").write_text("1 2 3")
    out = tmp_path / "out.json"
    code = main_for(_Inputs, _run, "demo", ["--input_json", str(_write(tmp_path, {"path": str(tmp_path / "v.txt")})), "--output_json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["values"] == [2.0, 4.0, 6.0] and data["mean"] == 4.0 and data["count"] == 3
    assert data["nan"] is None
    assert not out.with_name("out.json.inprogress").exists()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("{not json", "input JSON is unreadable"),
        ("[1, 2]", "input JSON must be an object"),
        ({}, "invalid input: path: Field required"),
        ({"path": "x", "factor": -1}, "factor: Input should be greater than 0"),
        ({"path": "x", "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_malformed_input_exits_2_with_one_clear_message(tmp_path, capsys, raw, expected):
    in_json = _write(tmp_path, raw)
    out = tmp_path / "out.json"
    assert main_for(_Inputs, _run, "demo", ["--input_json", str(in_json), "--output_json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(in_json) in err and expected in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_stage_input_error_exits_1_naming_the_file(tmp_path, capsys):
    out = tmp_path / "out.json"
    code = main_for(_Inputs, _run, "demo", ["--input_json", str(_write(tmp_path, {"path": str(tmp_path / "nope.txt")})), "--output_json", str(out)])
    assert code == 1
    assert f"{tmp_path / 'nope.txt'}: file is missing" in capsys.readouterr().err
    assert not out.exists()


def test_missing_input_json(tmp_path, capsys):
    assert main_for(_Inputs, _run, "demo", ["--input_json", str(tmp_path / "absent.json"), "--output_json", str(tmp_path / "o.json")]) == 2
    assert "input JSON not found" in capsys.readouterr().err


def test_output_is_replaced_atomically(tmp_path):
    out = tmp_path / "o.json"
    write_output_json(out, {"a": 1})

    class Unserializable:
        pass

    with pytest.raises(TypeError):
        write_output_json(out, {"a": Unserializable()})
    assert json.loads(out.read_text()) == {"a": 1}
    assert not (tmp_path / "o.json.inprogress").exists()


def test_session_inputs_module_runs_as_a_script(tmp_path):
    """`python -m release_platform.modules.session_inputs` with an unknown session: exit 1, clear message."""
    lims_url = f"sqlite:///{tmp_path / 'lims.sqlite'}"
    from release_platform.lims import LimsClient

    LimsClient(lims_url).upgrade()
    in_json = _write(tmp_path, {"kind": "ophys_session", "session_id": 123, "lims_url": lims_url})
    proc = subprocess.run(
        [sys.executable, "-m", "release_platform.modules.session_inputs", "--input_json", str(in_json), "--output_json", str(tmp_path / "o.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "ophys_session 123: unknown ophys_session id" in proc.stderr
    bad = _write(tmp_path, {"kind": "spaceship", "session_id": 1})
    proc = subprocess.run(
        [sys.executable, "-m", "release_platform.modules.session_inputs", "--input_json", str(bad), "--output_json", str(tmp_path / "o.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "kind: Input should be" in proc.stderr


# --- outputs never overwrite inputs; failures are one line ---------------------------------------------------------


class _Copy(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    input_file: str
    extra_inputs: list[str] = []
    output_file: str


def _copy(args: _Copy) -> dict:
    data = Path(args.input_file).read_bytes()
    Path(args.output_file).write_bytes(data[::-1])
    return {"output_file": args.output_file}


def _main(model, run, tmp_path, data: dict, out=None) -> int:
    in_json = _write(tmp_path, data)
    return main_for(model, run, "t", ["--input_json", str(in_json), "--output_json", str(out or tmp_path / "out.json")])


@pytest.mark.parametrize("alias", ["same", "dotted", "hardlink", "nested"])
def test_an_output_equal_to_an_input_is_refused(tmp_path, capsys, alias):
    src = tmp_path / "data.bin"
    src.write_bytes(b"precious input")
    (tmp_path / "sub").mkdir()
    if alias == "hardlink":
        os.link(src, tmp_path / "sub" / "link.bin")
    output = {"same": str(src), "dotted": str(tmp_path / "sub" / ".." / "data.bin"),
              "hardlink": str(tmp_path / "sub" / "link.bin"), "nested": str(src)}[alias]
    data = {"input_file": str(tmp_path / "other.bin"), "extra_inputs": [str(src)], "output_file": output} \
        if alias == "nested" else {"input_file": str(src), "output_file": output}
    (tmp_path / "other.bin").write_bytes(b"x")
    assert _main(_Copy, _copy, tmp_path, data) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "output_file" in err and "is also an input" in err and str(src) in err
    assert src.read_bytes() == b"precious input" and not (tmp_path / "out.json").exists()


def test_the_output_json_may_not_overwrite_an_input(tmp_path, capsys):
    src = tmp_path / "data.bin"
    src.write_bytes(b"keep")
    assert _main(_Copy, _copy, tmp_path, {"input_file": str(src), "output_file": str(tmp_path / "o.bin")}, out=src) == 2
    assert "--output_json" in capsys.readouterr().err and src.read_bytes() == b"keep"
    in_json = _write(tmp_path, {"input_file": str(src), "output_file": str(tmp_path / "o.bin")})
    before = in_json.read_text()
    assert main_for(_Copy, _copy, "t", ["--input_json", str(in_json), "--output_json", str(in_json)]) == 2
    assert in_json.read_text() == before


def test_dff_refuses_to_overwrite_its_input(tmp_path, capsys):
    import h5py

    from release_platform.modules import dff

    traces = tmp_path / "npc.h5"
    with h5py.File(traces, "w") as handle:
        handle["FC"] = 400 + np.arange(1800.0).reshape(2, 900) % 7
        handle["roi_names"] = np.array([b"1", b"2"])
    before = traces.read_bytes()
    code = _main(dff.Inputs, dff.run, tmp_path, {"input_file": str(traces), "output_file": str(traces),
                                                 "movie_frame_rate_hz": 30.0, "long_baseline_filter_s": 10})
    assert code == 2
    err = capsys.readouterr().err
    assert f"output_file {traces} is also an input (input_file)" in err
    assert traces.read_bytes() == before


@pytest.mark.parametrize("error, expected", [
    (OSError(28, "No space left on device", "/full/disk/out.h5"), "/full/disk/out.h5: No space left on device (ENOSPC)"),
    ("lims", "LIMS at sqlite:///x is unavailable: disk I/O error"),
])
def test_a_full_disk_or_a_lims_outage_is_one_line_and_exit_1(tmp_path, capsys, error, expected):
    from release_platform.lims import LimsUnavailableError

    def fail(args: _Inputs) -> dict:
        raise LimsUnavailableError(expected) if error == "lims" else error

    assert _main(_Inputs, fail, tmp_path, {"path": "x"}) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {expected}" and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("url, expected", [
    ("not a url", "is not a database URL"),
    ("nosuchdb://host/lims", "is not a database URL"),
    ("postgresql+psycopg2://me:s3cret@127.0.0.1:1/lims", "is unavailable"),
])
def test_a_bad_lims_url_is_one_line_and_exit_1(tmp_path, capsys, url, expected):
    from release_platform.modules import session_inputs

    code = _main(session_inputs.Inputs, session_inputs.run, tmp_path, {"kind": "ophys_session", "session_id": 1, "lims_url": url})
    err = capsys.readouterr().err
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and expected in err and "s3cret" not in err


def test_a_sqlite_lims_in_a_missing_directory_is_refused_not_created(tmp_path, capsys):
    from release_platform.lims import LimsClient
    from release_platform.modules import session_inputs

    missing = tmp_path / "no" / "such" / "dir"
    for where in (missing / "lims.sqlite", tmp_path / "absent.sqlite"):
        code = _main(session_inputs.Inputs, session_inputs.run, tmp_path,
                     {"kind": "ophys_session", "session_id": 1, "lims_url": f"sqlite:///{where}"})
        err = capsys.readouterr().err
        assert code == 1 and len(err.strip().splitlines()) == 1
        assert "no LIMS database" in err and "release-platform lims upgrade" in err and str(where) in err
        assert not where.exists()
    assert not (tmp_path / "no").exists()
    client = LimsClient(f"sqlite:///{missing / 'lims.sqlite'}")
    assert client.upgrade()  # creating the LIMS is what upgrade is for
    assert (missing / "lims.sqlite").is_file() and client.session_ids("ophys_session") == []
    client.dispose()


def test_a_stage_writing_into_a_directory_declares_its_outputs(tmp_path, capsys):
    from release_platform.modules import neuropil_correction

    out_dir = tmp_path / "npc"
    out_dir.mkdir()
    traces = out_dir / "neuropil_correction.h5"  # the roi traces sit where the corrected traces would be written
    traces.write_bytes(b"roi traces")
    code = _main(neuropil_correction.Inputs, neuropil_correction.run, tmp_path,
                 {"roi_trace_file": str(traces), "neuropil_trace_file": str(traces), "storage_directory": str(out_dir)})
    assert code == 2 and "is also an input (roi_trace_file" in capsys.readouterr().err
    assert traces.read_bytes() == b"roi traces"


STAGES = ["copy_utility", "demixing", "dff", "metadata_writer", "neuropil_correction", "session_inputs",
          "trace_extraction", "write_ecephys_nwb", "write_ophys_nwb"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_default_of_every_stage_is_a_valid_value(stage):
    """A default passes its field's validation, and one that validation changes (an AllenSDK-style ``chmod: 644``
    that means octal 644) is validated at run time too (copy_utility's chmod default was once used as decimal 775)."""
    import importlib
    from typing import Annotated

    model = importlib.import_module(f"release_platform.modules.{stage}").Inputs
    checked = 0
    for name, field in model.model_fields.items():
        if field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        try:  # the field's own validators included
            validated = getattr(model.__pydantic_validator__.validate_assignment(model.model_construct(), name, default), name)
        except AttributeError:  # a model-level validator needs required fields: check the type and constraints
            annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
            validated = pydantic.TypeAdapter(annotation).validate_python(default)
        if validated != default:
            assert field.validate_default, f"{stage}.{name}: default {default!r} means {validated!r} but is used unvalidated"
            assert getattr(model.model_construct(), name) == default  # (construct skips validation)
        checked += 1
    assert checked > 0
