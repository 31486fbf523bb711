"""The shared NWB write protocol, the backend configuration and the inspection helpers."""

from __future__ import annotations

import datetime as dt
import json
import os

import h5py
import numpy as np
import pytest
from pynwb import NWBFile, TimeSeries

import release_platform
from data_fixtures.spec import corrupt_file
from release_platform import atomic
from release_platform.atomic import DiskFullError
from release_platform.errors import InputError
from release_platform.nwb import config as C
from release_platform.nwb import protocol as P
from release_platform.nwb.inspection import inspect_nwb, validate_nwb
from release_platform_tests.disk import small_tmpfs  # noqa: F401 - fixture

START = dt.datetime(2022, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)


def _source(path, n=1000, ch=3):
    data = (np.arange(n * ch, dtype=np.int16) % 977).reshape(n, ch)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
    return data


def _builder(source, *, identifier="abc", columns=None):
    def build():
        nwb = NWBFile(
            session_description="protocol test",
            identifier=identifier,
            session_start_time=START,
            file_create_date=START,
            source_script=P.provenance_json(P.provenance_record(writer="test", parameters={"x": 1}, inputs={"src": source})),
            source_script_file_name="test",
        )
        it = P.H5DatasetIterator(source, "data", columns=columns, chunk_shape=(100, 1), buffer_gb=0.001)
        nwb.add_acquisition(TimeSeries(name="streamed", data=it, unit="a.u.", rate=10.0, description="streamed from HDF5"))
        nwb.add_acquisition(
            TimeSeries(name="in_memory", data=np.linspace(0, 1, 50), timestamps=np.arange(50) * 0.1 + np.r_[0, np.zeros(49)],
                       unit="a.u.", description="in memory")
        )
        nwb.add_trial(start_time=0.0, stop_time=1.0)
        nwb.add_trial(start_time=2.0, stop_time=3.5)
        return nwb

    return build


def test_write_validates_renames_and_records_provenance(tmp_path):
    src = tmp_path / "src.h5"
    data = _source(src)
    out = tmp_path / "out" / "file.nwb"
    result = P.write_nwb(out, _builder(src), entity="test_session 1")
    assert out.exists() and not (tmp_path / "out" / "file.nwb.inprogress").exists()
    assert not (tmp_path / "out" / "file.nwb.error").exists()
    assert result.n_datasets_checked >= 6
    assert validate_nwb(out) == []
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["acquisition/streamed/data"][()], data)
        assert f["acquisition/streamed/data"].chunks == (100, 1)
        assert f["acquisition/streamed/data"].compression == "gzip"
        assert f["acquisition/streamed/data"].compression_opts == 4
        assert f["acquisition/streamed/data"].shuffle
    prov = P.read_provenance(out)
    assert prov["version"] == release_platform.__version__
    assert prov["parameters"] == {"x": 1}
    assert prov["inputs"]["src"]["sha256"] == P.sha256_file(src)
    assert prov["inputs"]["src"]["file"] == "src.h5"  # no directories: location-independent


def test_two_writes_of_the_same_inputs_are_identical(tmp_path):
    src = tmp_path / "src.h5"
    _source(src)
    a = P.write_nwb(tmp_path / "a.nwb", _builder(src), entity="e").path
    b = P.write_nwb(tmp_path / "b.nwb", _builder(src), entity="e").path
    assert P.sha256_file(a) == P.sha256_file(b)


def test_corrupt_input_leaves_only_the_error_file(tmp_path):
    src = tmp_path / "src.h5"
    _source(src, n=20000)
    corrupt_file(src)
    out = tmp_path / "file.nwb"
    with pytest.raises(P.NwbWriteError) as exc:
        P.write_nwb(out, _builder(src), entity="test_session 7")
    msg = str(exc.value)
    assert "test_session 7" in msg and str(out) in msg and "src.h5" in msg
    assert isinstance(exc.value, InputError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.nwb.error", "src.h5"]


def test_failure_keeps_the_previous_good_file(tmp_path):
    src = tmp_path / "src.h5"
    _source(src)
    out = tmp_path / "file.nwb"
    P.write_nwb(out, _builder(src), entity="e")
    good = P.sha256_file(out)

    def boom():
        raise InputError("the stimulus table is unreadable", path=tmp_path / "stim.csv")

    with pytest.raises(P.NwbWriteError, match="stimulus table is unreadable"):
        P.write_nwb(out, boom, entity="e")
    assert P.sha256_file(out) == good
    assert (tmp_path / "file.nwb.error").read_text().startswith("e: ")
    # a later success clears the stale error file
    P.write_nwb(out, _builder(src), entity="e")
    assert not (tmp_path / "file.nwb.error").exists()


class _Lying(P.H5DatasetIterator):
    """Writes the source, then claims different values when re-read: the round trip must catch it."""

    def __init__(self, *a, **k):
        self.written = False
        super().__init__(*a, **k)

    def _get_data(self, selection):
        block = super()._get_data(selection)
        return block + 1 if self.written else block

    def __next__(self):
        try:
            return super().__next__()
        except StopIteration:
            self.written = True
            raise


def test_round_trip_mismatch_is_an_error(tmp_path):
    src = tmp_path / "src.h5"
    _source(src)

    def build():
        nwb = _builder(src)()
        nwb.add_acquisition(TimeSeries(name="lying", data=_Lying(src, "data", chunk_shape=(100, 3)), unit="a.u.", rate=1.0,
                                       description="changes after writing"))
        return nwb

    with pytest.raises(P.NwbWriteError, match="round-trip.*lying"):
        P.write_nwb(tmp_path / "f.nwb", build, entity="e")
    assert (tmp_path / "f.nwb.error").exists() and not (tmp_path / "f.nwb").exists()


def test_iterator_column_selection_and_missing_file(tmp_path):
    src = tmp_path / "src.h5"
    data = _source(src, n=300, ch=5)
    P.write_nwb(tmp_path / "c.nwb", _builder(src, columns=[0, 2, 4]), entity="e")
    with h5py.File(tmp_path / "c.nwb", "r") as f:
        np.testing.assert_array_equal(f["acquisition/streamed/data"][()], data[:, [0, 2, 4]])
    with pytest.raises(InputError, match="missing") as exc:
        P.H5DatasetIterator(tmp_path / "nope.h5", "data", entity="probe Z")
    assert "probe Z" in str(exc.value)


def test_deterministic_identifier_and_regular_rate():
    assert P.deterministic_identifier("ecephys_session", 5) == P.deterministic_identifier("ecephys_session", 5)
    assert P.deterministic_identifier("ecephys_session", 5) != P.deterministic_identifier("ecephys_session", 6)
    assert P.regular_rate(np.arange(10) / 2500.0) == pytest.approx((0.0, 2500.0))
    assert P.regular_rate(np.array([0.0, 0.1, 0.3])) is None
    ts = np.arange(1000) / 100.0 + 5.0
    assert P.regular_rate(ts, block_rows=7) == pytest.approx((5.0, 100.0))
    ts[500] += 1e-6
    assert P.regular_rate(ts, block_rows=7) is None


def test_configuration_is_keyed_by_location():
    cfg = C.BackendConfiguration(
        datasets={
            "units/*": C.DatasetIOConfiguration(compression="lzf"),
            "units/spike_times": C.DatasetIOConfiguration(compression_level=9),
            "acquisition/*/data": C.DatasetIOConfiguration(chunk_shape=(1000, 8)),
        }
    )
    assert cfg.for_location("units/spike_times").compression_level == 9
    assert cfg.for_location("units/spike_amplitudes").compression == "lzf"
    assert cfg.for_location("acquisition/lfp/lfp_data/data").chunk_shape == (1000, 8)
    assert cfg.for_location("intervals/trials/start_time") == cfg.default
    assert cfg.default.compression == "gzip" and cfg.default.compression_level == 4 and cfg.default.shuffle
    kwargs = cfg.for_location("acquisition/x/data").h5_kwargs((500, 4))
    assert kwargs["chunks"] == (500, 4)
    with pytest.raises(InputError, match="dimensions"):
        cfg.for_location("acquisition/x/data").h5_kwargs((500,))


def test_internal_tier_needs_hdf5plugin(tmp_path):
    if C.codec_available("blosc_zstd"):
        cfg = C.BackendConfiguration.for_tier("internal")
        assert cfg.default.compression == "blosc_zstd"
        return
    with pytest.raises(C.CodecUnavailableError, match="hdf5plugin"):
        C.BackendConfiguration.for_tier("internal")
    cfg = C.BackendConfiguration(default=C.DatasetIOConfiguration(compression="blosc_zstd"))
    with pytest.raises(C.CodecUnavailableError, match="hdf5plugin"):
        P.write_nwb(tmp_path / "x.nwb", lambda: None, entity="e", config=cfg)
    assert list(tmp_path.iterdir()) == []  # failed before touching any file


def test_configuration_applies_per_location(tmp_path):
    src = tmp_path / "src.h5"
    _source(src)
    cfg = C.BackendConfiguration(datasets={"acquisition/in_memory/*": C.DatasetIOConfiguration(compression="none")})
    result = P.write_nwb(tmp_path / "f.nwb", _builder(src), entity="e", config=cfg)
    assert "acquisition/streamed/data" in result.locations
    with h5py.File(tmp_path / "f.nwb", "r") as f:
        assert f["acquisition/in_memory/data"].compression is None
        assert f["intervals/trials/start_time"].compression == "gzip"


def test_inspection_reports_counts_and_plain_messages(tmp_path):
    src = tmp_path / "src.h5"
    _source(src)
    P.write_nwb(tmp_path / "f.nwb", _builder(src), entity="e")
    report = inspect_nwb(tmp_path / "f.nwb")
    assert set(report.counts) == {"ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION", "BEST_PRACTICE_SUGGESTION"}
    # no Subject: the dandi config makes that CRITICAL
    assert report.counts["CRITICAL"] >= 1
    assert any(m["check_function_name"] == "check_subject_exists" for m in report.at("CRITICAL"))
    json.dumps(report.as_dict())  # plain data
    assert sum(report.counts.values()) == len(report.messages)


# ---------------------------------------------------------------------------------------------------------
# A full disk: refused before writing, a clean error and no leftovers when it fills anyway, never a crash
# ---------------------------------------------------------------------------------------------------------

_HDF5_ENOSPC = ("[Errno 28] Can't synchronously write data (file write failed: time = Sun Nov 29 20:15:57 2026\n"
                ", filename = '{tmp}', file descriptor = 3, errno = 28, error message = 'No space left on device', "
                "buf = 0x7fcbe71f9810, total write size = 11030528, bytes this sub-write = 11030528, offset = 20971520)")


def _random_source(path, n, ch=4, seed=0):
    data = np.random.default_rng(seed).integers(-2**15, 2**15, size=(n, ch), dtype=np.int16)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data)
    return data


def _files(directory):
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_size_estimate_tracks_the_written_file(tmp_path):
    src = tmp_path / "src.h5"
    _random_source(src, 400_000)  # 3.2 MB of incompressible samples
    nwb = _builder(src)()
    locations = C.apply_backend_configuration(nwb, C.BackendConfiguration())
    estimate = P.estimate_nwb_bytes(nwb, locations)
    written = P.write_nwb(tmp_path / "f.nwb", _builder(src), entity="e").n_bytes
    assert written <= estimate <= written * 1.5 + P.OVERHEAD_BYTES * 1.05


def test_not_enough_free_space_fails_before_writing_in_one_line(tmp_path, monkeypatch):
    src = tmp_path / "src.h5"
    _random_source(src, 400_000)
    monkeypatch.setattr(atomic, "free_bytes", lambda path: 1_500_000)
    out = tmp_path / "out" / "lfp.nwb"
    with pytest.raises(P.NwbWriteError) as exc:
        P.write_nwb(out, _builder(src), entity="ecephys_session 4001 (probeA)")
    msg = str(exc.value)
    assert isinstance(exc.value, DiskFullError) and "\n" not in msg
    assert msg.startswith(f"ecephys_session 4001 (probeA): {out}: not enough disk space for lfp.nwb: needs about ")
    needed = float(msg.split("needs about ")[1].split(" MB")[0])
    assert 3.2 <= needed <= 3.2 * 1.5 + 2.2 and "1.5 MB free in " + str(out.parent) in msg
    assert _files(out.parent) == []  # nothing written, no temp file, no error file


def _failing_write(tmp_holder):
    """A write that puts 2 MB into the temporary file, then fails the way HDF5 does on a full disk."""

    def write(nwbfile, tmp, *, validate, round_trip):
        tmp_holder.append(tmp)
        tmp.write_bytes(b"\0" * 2_000_000)
        raise OSError(28, _HDF5_ENOSPC.format(tmp=tmp))

    return write


@pytest.mark.parametrize("keep", [False, True])
def test_disk_full_while_writing_names_the_file_and_removes_the_partial_file(tmp_path, monkeypatch, keep):
    src = tmp_path / "src.h5"
    _source(src)
    out = tmp_path / "out" / "behavior_ophys_experiment_1101.nwb"
    out.parent.mkdir()
    out.write_bytes(b"previous good file")
    temps = []
    monkeypatch.setattr(P, "_write_and_check", _failing_write(temps))
    with pytest.raises(P.NwbDiskFullError) as exc:
        P.write_nwb(out, _builder(src), entity="ophys_experiment 1101", keep_failed_files=keep, isolate=False)
    msg = str(exc.value)
    assert "\n" not in msg and ", filename =" not in msg and ".inprogress" not in msg
    assert msg.startswith(f"ophys_experiment 1101: {out}: disk full while writing {out.name} (No space left on device; ")
    assert out.read_bytes() == b"previous good file"
    assert not temps[0].exists()
    if keep:
        assert msg.endswith(f"the partial file is kept as {out.name}.error")
        assert _files(out.parent) == [out.name, out.name + ".error"]
        assert (out.parent / (out.name + ".error")).stat().st_size == 2_000_000
    else:
        assert msg.endswith("the partial file was removed")
        assert _files(out.parent) == [out.name]


def test_keep_failed_files_from_the_environment(tmp_path, monkeypatch):
    src = tmp_path / "src.h5"
    _source(src)
    monkeypatch.setattr(P, "_write_and_check", _failing_write([]))
    monkeypatch.setenv("RELEASE_PLATFORM_KEEP_FAILED_FILES", "yes")
    with pytest.raises(P.NwbDiskFullError):
        P.write_nwb(tmp_path / "f.nwb", _builder(src), entity="e", isolate=False)
    assert (tmp_path / "f.nwb.error").stat().st_size == 2_000_000


def test_a_crashing_writer_process_is_reported_not_inherited(tmp_path, monkeypatch):
    import signal

    src = tmp_path / "src.h5"
    _source(src)
    temps = []

    def crash(nwbfile, tmp, *, validate, round_trip):
        temps.append(tmp)
        tmp.write_bytes(b"\0" * 1000)
        os.kill(os.getpid(), signal.SIGSEGV)

    monkeypatch.setattr(P, "_write_and_check", crash)
    out = tmp_path / "f.nwb"
    with pytest.raises(P.NwbWriteError) as exc:
        P.write_nwb(out, _builder(src), entity="e", isolate=True)
    assert "crashed (SIGSEGV)" in str(exc.value) and str(out) in str(exc.value)
    assert _files(tmp_path) == ["f.nwb.error", "src.h5"]  # the temporary file is gone; the error file has the message
    assert "crashed (SIGSEGV)" in (tmp_path / "f.nwb.error").read_text()


def test_real_full_disk_during_an_nwb_write(tmp_path, small_tmpfs, monkeypatch):
    """HDF5 on a 3 MB tmpfs, the size estimate forced too low so the write really hits ENOSPC: the writer process
    fails (HDF5 would take this process down with SIGSEGV), the error is one line, the tmpfs is left empty."""
    src = tmp_path / "src.h5"
    _random_source(src, 800_000)  # 6.4 MB, incompressible
    monkeypatch.setattr(P, "_size_bounds", lambda nwbfile, locations: (1_000_000, 1_000_000))
    out = small_tmpfs / "lfp_probe_4101.nwb"
    with pytest.raises(P.NwbDiskFullError) as exc:
        P.write_nwb(out, _builder(src), entity="ecephys_session 4001 (probeA)")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"ecephys_session 4001 (probeA): {out}: disk full while writing {out.name}")
    assert _files(small_tmpfs) == []
    assert atomic.free_bytes(small_tmpfs) > 2_900_000  # nothing keeps the disk full
    # with room to spare the same write succeeds in place
    ok = P.write_nwb(tmp_path / "ok.nwb", _builder(src), entity="e")
    assert ok.path.exists()


def _record_children(monkeypatch) -> list[str]:
    """Names of the files written in a child process from now on (the writes still run there)."""
    children = []
    real = atomic.run_in_child

    def record(fn, *, what):
        children.append(what)
        return real(fn, what=what)

    monkeypatch.setattr(atomic, "run_in_child", record)
    return children


def test_a_write_with_room_to_spare_runs_in_this_process_and_a_tight_disk_in_a_child(tmp_path, monkeypatch):
    """The writer process is chosen from the free space: room to spare (the reserve plus four times the estimate,
    and the uncompressed size) -> this process; one byte less -> a child process. Both write the same file."""
    src = tmp_path / "src.h5"
    _random_source(src, 100_000)
    monkeypatch.delenv("RELEASE_PLATFORM_WRITER_PROCESS", raising=False)
    nwb = _builder(src)()
    estimate, worst = P._size_bounds(nwb, C.apply_backend_configuration(nwb, C.BackendConfiguration()))
    roomy = max(atomic.ISOLATE_FACTOR * estimate, worst) + atomic.ISOLATE_RESERVE_BYTES
    children = _record_children(monkeypatch)
    written = {}
    for free in (roomy, roomy - 1):
        monkeypatch.setattr(atomic, "free_bytes", lambda path, free=free: free)
        out = tmp_path / f"free_{free}.nwb"
        P.write_nwb(out, _builder(src), entity="e")
        with h5py.File(out, "r") as fh:
            written[free] = fh["acquisition/streamed/data"][()]
    assert children == [f"free_{roomy - 1}.nwb"]
    np.testing.assert_array_equal(written[roomy], written[roomy - 1])
    # the environment overrides the free-space rule both ways
    monkeypatch.setattr(atomic, "free_bytes", lambda path: roomy)
    monkeypatch.setenv("RELEASE_PLATFORM_WRITER_PROCESS", "always")
    P.write_nwb(tmp_path / "always.nwb", _builder(src), entity="e")
    monkeypatch.setattr(atomic, "free_bytes", lambda path: roomy - 1)
    monkeypatch.setenv("RELEASE_PLATFORM_WRITER_PROCESS", "never")
    P.write_nwb(tmp_path / "never.nwb", _builder(src), entity="e")
    assert children == [f"free_{roomy - 1}.nwb", "always.nwb"]


def test_validation_with_the_process_validators_finds_what_pynwb_validate_finds(tmp_path):
    """The protocol validates through this process's namespaces and validators built once; on a file broken after
    writing (a required attribute removed) it reports the same problems as ``pynwb.validate`` on the file."""
    import pynwb

    src = tmp_path / "src.h5"
    _source(src)
    out = tmp_path / "file.nwb"
    P.write_nwb(out, _builder(src), entity="test_session 1")
    with h5py.File(out, "a") as f:
        del f["acquisition/in_memory/data"].attrs["unit"]
    # the platform's extensions loaded in this process are cached in every file and include core: they are the
    # namespaces validated (as pynwb.validate chooses them), core itself is not validated twice
    names = P._process_namespaces(out)
    assert names and "ndx-release-platform" in names and "core" not in names
    expected = sorted(str(e) for e in pynwb.validate(path=str(out)))
    with pynwb.NWBHDF5IO(str(out), "r", manager=pynwb.get_manager(), load_namespaces=False) as rio:
        builder = rio.read_builder()
        got = sorted(str(e) for name in P._process_namespaces(out) for e in P._validator(name).validate(builder))
    assert got == expected and any("unit" in problem for problem in got)
    # a file caching a namespace this process does not know is validated the general way
    with h5py.File(out, "a") as f:
        f["specifications"].create_group("ndx-unknown-extension")
    assert P._process_namespaces(out) is None


def test_provenance_takes_digests_recorded_upstream_and_rehashes_changed_files(tmp_path, monkeypatch):
    import hashlib

    from release_platform.ophys.io import write_traces

    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        pytest.skip("the test directory's filesystem has no user extended attributes")
    upstream = write_traces(tmp_path / "roi_traces.h5", np.random.default_rng(0).normal(size=(5, 200)), list("abcde"))
    changed = write_traces(tmp_path / "dff.h5", np.random.default_rng(1).normal(size=(5, 200)), list("abcde"))
    with open(changed, "ab") as fh:  # appended to after it was committed
        fh.write(b"\0" * 16)
    plain = tmp_path / "stimulus.csv"
    plain.write_text("start_time,stop_time\n0,1\n")
    hashed = []
    real = atomic._sha256_fd

    def counting(fd, *args, **kwargs):
        hashed.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(atomic, "_sha256_fd", counting)
    record = P.provenance_record(writer="test", inputs={"roi": upstream, "dff": changed, "stimulus": plain})
    assert sorted(os.path.basename(p) for p in hashed) == ["dff.h5", "stimulus.csv"]  # the upstream digest is taken
    for name, path in (("roi", upstream), ("dff", changed), ("stimulus", plain)):
        assert record["inputs"][name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["inputs"][name]["bytes"] == path.stat().st_size
