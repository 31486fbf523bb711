"""The command line on bad input: one line naming what is wrong, no Dagster traceback.

Unknown sessions, path-like partition keys, a zero batch size, a LIMS that goes away once the run has
started, and failed blocking checks (named by session, plane and problem in the run summary).
"""

from __future__ import annotations

import warnings

import dagster as dg
import pytest

from release_platform import cli
from release_platform.assets.resources import StorageResource
from release_platform.errors import InputError


@pytest.fixture
def demo_home(demo_lims, home, monkeypatch):
    """The seeded demo LIMS in an isolated home, with its own Dagster instance directory."""
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    return home


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text
    assert "DagsterExecutionStepExecutionError" not in text, text
    assert "dagster._core" not in text, text


def test_unknown_session_is_named_as_not_in_lims(demo_home, capsys):
    code = cli.main(["materialize", "--kind", "ecephys_session", "--partition", "999999"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: ecephys_session 999999 is not in LIMS (sqlite:///"), err
    _no_traceback(out + err)


@pytest.mark.parametrize("key", ["../x", "a/b", "..", "0", "-3", "1.5", "007", " 12", "1e3", ""])
def test_path_like_or_non_id_partition_keys_are_refused_at_the_command_line(demo_home, capsys, key):
    code = cli.main(["materialize", "--kind", "ophys_session", "--partition", key])
    out, err = capsys.readouterr()
    assert code == 2
    assert err == f"error: ophys_session: partition key {key!r} is not a LIMS id (a positive integer)\n"
    _no_traceback(out + err)
    assert not (demo_home / "storage").exists()  # nothing was written anywhere


@pytest.mark.parametrize("key", ["../x", "a/b", "../../etc", "1/../../x"])
def test_storage_resource_refuses_path_like_keys(tmp_path, key):
    root = tmp_path / "root"
    storage = StorageResource(root=str(root))
    with pytest.raises(InputError, match=r"is not a LIMS id \(a positive integer\)"):
        storage.dir_for("roi_traces", key)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == []
    assert storage.dir_for("roi_traces", "1001") == root / "roi_traces" / "1001"


@pytest.mark.parametrize("value, shown", [("0", "batch size must be ≥ 1, got 0"), ("-5", "batch size must be ≥ 1, got -5"),
                                          ("x", "batch size must be a whole number ≥ 1, got 'x'")])
def test_backfill_batch_size_below_one_is_refused(demo_home, capsys, value, shown):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["backfill", "--experiment", "901", "--batch-size", value])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    assert f"argument --batch-size: {shown}" in err
    _no_traceback(out + err)


def test_lims_outage_during_a_run_ends_with_the_lims_error_and_hidden_password(demo_home, capsys, monkeypatch):
    """The LIMS answers when the run is planned, then is gone (nothing listens on port 1) when its steps ask."""
    instance = cli._instance()
    cli.sync_partitions(instance, cli._client())
    capsys.readouterr()
    monkeypatch.setenv("RELEASE_PLATFORM_LIMS_URL", "postgresql+psycopg2://lims_user:s3cret-pw@127.0.0.1:1/lims")
    result = cli.materialize_partition(instance, "behavior_session", "3001")
    cli._print_result("behavior_session", "3001", result)
    out, err = capsys.readouterr()
    assert not result.success
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) <= 4, out + err
    failure = [line for line in lines if line.strip().startswith("behavior_session_inputs:")]
    assert len(failure) == 1, out + err
    assert "LIMS at postgresql+psycopg2://lims_user:***@127.0.0.1:1/lims is unavailable" in failure[0]
    assert "s3cret-pw" not in out + err
    _no_traceback(out + err)


# -- failed checks in the run summary ----------------------------------------------------------------------
# A blocking check that reports per plane, as the ophys checks do (dff_finite_for_valid_rois), in a job of
# its own so the summary is tested on what Dagster records for a real failed check evaluation.
_PARTS = dg.DynamicPartitionsDefinition(name="ophys_session")


@dg.asset(partitions_def=_PARTS)
def ophys_session_inputs(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"movies": dg.MetadataValue.json({"1101": "/raw/a.h5", "1102": "/raw/b.h5"})})


with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)  # partitions_def on a check is preview in Dagster

    @dg.asset_check(asset=ophys_session_inputs, partitions_def=_PARTS, blocking=True)
    def dff_finite_for_valid_rois(context) -> dg.AssetCheckResult:
        bad = dg.MetadataValue.json({"1102": ["17", "23"]})
        return dg.AssetCheckResult(passed=False, metadata={"valid_rois_checked": 40, "rois_with_nonfinite_dff": bad})


def test_failed_blocking_check_names_session_plane_and_problem(capsys):
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("ophys_session", ["1001"])
    result = dg.materialize([ophys_session_inputs, dff_finite_for_valid_rois], partition_key="1001", instance=instance,
                            raise_on_error=False)
    cli._print_result("ophys_session", "1001", result)
    out = capsys.readouterr().out
    failed = [line.strip() for line in out.splitlines() if "check did not pass" in line]
    assert failed == ["check did not pass: ophys_session 1001: check dff_finite_for_valid_rois on ophys_session_inputs "
                      "(blocking): plane 1102: rois_with_nonfinite_dff: 17, 23"], out
