"""A partition's output directory is written by one process at a time: a second writer fails at once, naming the
pid that holds it, and the partition recovers once that writer is gone."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

_HOLD = """
import sys
from release_platform.storage import partition_lock
lock = partition_lock(sys.argv[1], "ecephys_units", "4001").acquire()
print("held", flush=True)
sys.stdin.read()  # until the test closes stdin
"""


@pytest.fixture
def instance(monkeypatch, demo_lims):
    monkeypatch.setenv("RELEASE_PLATFORM_LIMS_URL", demo_lims.url)
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("ecephys_session", ["4001"])
        yield inst


def _run_units(instance):
    from release_platform.definitions import defs

    return defs.resolve_job_def("ecephys_session_job").execute_in_process(
        partition_key="4001", instance=instance, raise_on_error=False,
        asset_selection=[dg.AssetKey("ecephys_session_inputs"), dg.AssetKey("ecephys_units")])


def test_second_writer_of_a_partition_fails_at_once_naming_the_holder(demo_lims, instance, home):
    storage = home / "storage"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(storage)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = _run_units(instance)
        assert not result.success
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        assert [f.step_key for f in failures] == ["ecephys_units"]
        message = failures[0].event_specific_data.error.message
        assert f"partition output {storage / 'ecephys_units' / '4001'} is being written by pid {holder.pid}" in message
        assert not list((storage / "ecephys_units").rglob("*.h5"))  # nothing written while another process held it
    finally:
        holder.stdin.close()
        holder.wait(30)
    # the holder is gone (its lock went with it): the same run now writes the partition, and a re-run in this
    # process takes the lock again (released at the end of the previous run)
    assert _run_units(instance).success
    assert sorted(p.name for p in (storage / "ecephys_units/4001").iterdir()) == ["units_probeA.h5", "units_probeB.h5"]
    assert _run_units(instance).success
    # and the run gave the lock back: another process takes it
    again = subprocess.Popen([sys.executable, "-c", _HOLD, str(storage)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert again.stdout.readline().strip() == "held", again.stderr.read()
    finally:
        again.stdin.close()
        again.wait(30)
