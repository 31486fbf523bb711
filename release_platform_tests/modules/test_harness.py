"""The module harness: good input, malformed input, atomic output, JSON conversion."""

from __future__ import annotations

import json
import math
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
