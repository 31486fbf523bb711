"""The NWB gate's two checks per file: schema validation through this process's validators, and one Inspector
pass on the smallest configuration that keeps every blocking check."""

from __future__ import annotations

import h5py
import pynwb
import pytest

from release_platform.nwb import protocol as P
from release_platform.nwb.inspection import gate_threshold, inspect_nwb, inspect_nwb_gate, validate_nwb
from release_platform.qc import BLOCKING, is_blocking
from release_platform.qc import nwb as qc_nwb
from release_platform_tests.nwb.test_protocol import _builder, _source


@pytest.fixture
def written(tmp_path):
    src = tmp_path / "src.h5"
    _source(src)
    out = tmp_path / "file.nwb"
    P.write_nwb(out, _builder(src), entity="test_session 1")
    return out


def test_validate_nwb_finds_what_pynwb_validate_finds(written, monkeypatch):
    assert validate_nwb(written) == [] == [str(e) for e in pynwb.validate(path=str(written))]
    with h5py.File(written, "a") as f:
        del f["acquisition/in_memory/data"].attrs["unit"]
        del f["acquisition/streamed/data"].attrs["unit"]
    expected = sorted(str(e) for e in pynwb.validate(path=str(written)))
    assert len(expected) >= 2
    assert sorted(validate_nwb(written)) == expected
    # a file caching a namespace this process does not know takes pynwb.validate's own path
    calls = []
    monkeypatch.setattr(P, "_process_namespaces", lambda path: calls.append(path))
    assert sorted(validate_nwb(written)) == expected and calls == [written]


def test_gate_threshold_is_the_least_severe_blocking_inspector_level():
    assert gate_threshold() == "BEST_PRACTICE_VIOLATION"
    assert is_blocking(gate_threshold()) and not is_blocking("BEST_PRACTICE_SUGGESTION")


def _blocking(report):
    return sorted((m["importance"], m["check_function_name"], str(m["location"]), m["message"])
                  for m in report.messages if m["importance"] in {level.name for level in BLOCKING})


def test_gate_keeps_every_blocking_message_of_the_full_inspection(written):
    # the file has no Subject: the dandi config makes that CRITICAL; its timestamps make suggestions
    full = inspect_nwb(written, config="dandi")
    gate = inspect_nwb_gate(written, config="dandi")
    assert full.counts["CRITICAL"] >= 1
    assert _blocking(gate) == [b for b in _blocking(full) if b[0] != "PYNWB_VALIDATION"]
    assert gate.importance_threshold == "BEST_PRACTICE_VIOLATION"
    assert gate.counts["PYNWB_VALIDATION"] == 0  # the schema is validate_nwb's check
    result = qc_nwb.check_nwb_inspector([written])
    assert not result.passed and result.metadata["best_practice_suggestions"] is None
    assert qc_nwb.inspector_result({str(written): full}).metadata["best_practice_suggestions"] == full.counts["BEST_PRACTICE_SUGGESTION"]
    # a schema problem is not the Inspector's to report any more: the validation check fails on it
    with h5py.File(written, "a") as f:
        del f["acquisition/in_memory/data"].attrs["unit"]
    assert not qc_nwb.check_pynwb_validation([written]).passed
