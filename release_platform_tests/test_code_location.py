"""Loading the code location is cheap: it imports Dagster and the platform's wiring, not the science libraries,
which the steps import where they use them; and its one-machine executor forks step processes from a server
that preloaded the code location."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import pytest

#: Libraries a step may need but loading the code location must not import.
HEAVY = ("numpy", "numba", "scipy", "pandas", "pandera", "pyarrow", "pynwb", "hdmf", "h5py", "nwbinspector", "matplotlib",
         "PIL", "sqlalchemy", "llvmlite")


def test_loading_the_code_location_imports_no_science_library():
    code = ("import json, sys\nimport release_platform.definitions as d\nd.defs.get_repository_def()\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_graph_constants_equal_the_table_specs_they_stand_for():
    from release_platform.assets import metadata as assets_metadata
    from release_platform.assets.stimulus import StimulusConfig
    from release_platform.metadata.schemas import TABLES
    from release_platform.stimulus.lsn import DEFAULT_SHUFFLES

    releases = assets_metadata.RELEASE_ASSETS
    assert assets_metadata.TABLE_PARENTS == {t: tuple(sorted({r.parent for r in TABLES[t].references})) for t in releases}
    assert assets_metadata.TABLES_WITH_FILES == tuple(t for t, s in TABLES.items() if s.file_kind and t in releases)
    assert StimulusConfig().n_shuffles == DEFAULT_SHUFFLES
    from release_platform.assets import ophys as assets_ophys
    from release_platform.qc import ophys as qc_ophys

    assert assets_ophys.MAX_UNCONVERGED_FRACTION == qc_ophys.MAX_UNCONVERGED_FRACTION


def test_lazy_package_names_resolve_to_their_submodules():
    import importlib

    import release_platform.lims as lims
    import release_platform.metadata as metadata
    from release_platform.lims import client

    modules = {name: importlib.import_module(f"release_platform.metadata.{name}")
               for name in ("builders", "files", "gather", "schemas", "validation")}
    # the submodule gather is imported: the package's name gather is still the function
    assert metadata.gather is modules["gather"].gather and callable(metadata.gather)
    assert sorted(metadata.__all__) == sorted(metadata._SUBMODULE)
    for name, submodule in metadata._SUBMODULE.items():
        assert getattr(metadata, name) is getattr(modules[submodule], name)
    for name in lims.__all__:
        assert getattr(lims, name) is getattr(client, name)
    for package in (lims, metadata):
        try:
            package.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError(f"{package.__name__}.no_such_name resolved")


def test_step_processes_start_from_a_preloaded_fork_server(monkeypatch):
    from release_platform import execution

    monkeypatch.delenv(execution.EXECUTOR_ENV, raising=False)
    executor = execution.select_executor()
    assert executor.name == "multiprocess"
    config = execution.multiprocess_executor_config()
    assert "forkserver" in config["start_method"]
    preload = execution.FORKSERVER_PRELOAD
    assert preload[0] == "release_platform.definitions" and preload[-1] == "release_platform.assets.step_preload"
    assert len(preload) == len(set(preload))
    for module in preload:  # every preloaded module exists (the fork server would skip a missing one silently)
        __import__(module)
    # the configuration is valid for Dagster's multiprocess executor
    assert dg.multiprocess_executor.configured(config).config_schema is not None
    monkeypatch.setenv(execution.EXECUTOR_ENV, "celery")
    assert execution.select_executor().name == "release_platform_celery"  # the Celery path is unchanged


def test_the_fork_server_preloads_the_libraries_of_the_runs_job():
    from release_platform import execution
    from release_platform.definitions import defs

    jobs = {job.name for job in defs.get_repository_def().get_all_jobs()}
    assert set(execution.SESSION_JOB_NAMES) <= jobs and set(execution.JOB_STEP_LIBRARIES) <= jobs
    ophys = execution.forkserver_preload("ophys_session_job")
    assert "release_platform.ophys.pipeline" in ophys
    for job in ("behavior_session_job", "ecephys_session_job", "icephys_cell_job"):
        assert "release_platform.ophys.pipeline" not in execution.forkserver_preload(job)
        assert set(execution.forkserver_preload(job)) < set(ophys)
    for job in ("release_metadata_job", "experiment_backfill_job", None):  # any other job: every step library
        assert execution.forkserver_preload(job) == execution.FORKSERVER_PRELOAD
    assert set(ophys) == set(execution.FORKSERVER_PRELOAD)
    # the behavior job's QC report step imports matplotlib itself: the server every step waits for does not
    assert execution.QC_FIGURES not in execution.forkserver_preload("behavior_session_job")
    assert execution.QC_FIGURES in ophys


def test_loading_and_resolving_the_code_location_starts_no_fork_server():
    """Webserver, daemon and code server load the code location and resolve its jobs; only a run's process,
    creating the executor, starts a fork server."""
    code = ("import multiprocessing.forkserver as f\nimport release_platform.definitions as d\n"
            "repo = d.defs.get_repository_def()\n[j.executor_def for j in repo.get_all_jobs()]\n"
            "print(f._forkserver._forkserver_pid)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "None"


def _demo_instance_env(seeded_demo, tmp_path, monkeypatch):
    import shutil

    from release_platform import execution
    from release_platform.dagster_home import CONFIG_DIR

    shutil.copyfile(seeded_demo / "lims.sqlite", tmp_path / "lims.sqlite")
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(CONFIG_DIR / "dagster.yaml", dagster_home / "dagster.yaml")
    for name, value in (("RELEASE_PLATFORM_HOME", tmp_path), ("RELEASE_PLATFORM_LIMS_URL", f"sqlite:///{tmp_path / 'lims.sqlite'}"),
                        ("RELEASE_PLATFORM_STORAGE", tmp_path / "storage"), ("DAGSTER_HOME", dagster_home)):
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv(execution.EXECUTOR_ENV, raising=False)


def _record_server_starts(monkeypatch) -> list[tuple[int, list[str]]]:
    """(pid, preloaded modules of the platform) of the fork server each time the executor starts one (the executor
    sets the module's preload list again when it runs: only its value at the start counts). Read a server's command
    line with :func:`_cmdline` once it serves: just after the start it may still be exec'ing."""
    import multiprocessing.forkserver as mp_forkserver
    from pathlib import Path

    from release_platform import execution

    started = []
    start = execution.start_fork_server

    def record(preload, fork=None):
        start(preload, fork)
        pid = mp_forkserver._forkserver._forkserver_pid
        preload = [m for m in mp_forkserver._forkserver._preload_modules if m.startswith("release_platform")]
        started.append((pid, preload))

    monkeypatch.setattr(execution, "start_fork_server", record)
    return started


def _cmdline(pid: int) -> bytes:
    from pathlib import Path

    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _step_workers(events) -> dict[str, str]:
    workers = {e.step_key: e.event_specific_data.metadata["pid"].value for e in events
               if e.event_type_value == "STEP_WORKER_STARTED"}
    assert set(workers) == {e.step_key for e in events if e.event_type_value == "STEP_SUCCESS"}
    assert len(workers) >= 6 and str(os.getpid()) not in workers.values()
    return workers


def test_a_session_runs_with_its_step_processes_forked_from_the_preloaded_server(seeded_demo, tmp_path, monkeypatch):
    """A behavior session orchestrated in this process (as the CLI does): the fork server is the standard
    library's (a fresh interpreter: this process is not a run worker), started when the executor is created,
    before the first step, with the behavior job's preload; every step succeeds in a process forked from it."""
    import multiprocessing.forkserver as mp_forkserver

    from release_platform import execution

    _demo_instance_env(seeded_demo, tmp_path, monkeypatch)
    server = mp_forkserver._forkserver
    server._stop()  # a server started earlier in this process would carry another environment
    started = _record_server_starts(monkeypatch)
    try:
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("behavior_session", ["3001"])
            result = execution.execute_partition(instance, "behavior_session", "3001")
            assert result.success
            _step_workers(result.all_events)
            assert instance.get_materialized_partitions(dg.AssetKey("behavior_nwb")) == {"3001"}
        # started once, when the executor was created, and used by every step
        assert [pid for pid, _ in started] == [server._forkserver_pid]
        assert b"multiprocessing.forkserver" in _cmdline(started[0][0])  # a fresh interpreter running the stdlib server
        assert started[0][1] == [m for m in execution.forkserver_preload("behavior_session_job")
                                 if m.startswith("release_platform")]
    finally:
        server._stop()


def test_a_run_worker_forks_its_fork_server_from_itself(seeded_demo, tmp_path, monkeypatch):
    """A run executed the way a run worker executes it (Dagster's core_execute_run): the fork server is a fork of
    this process (same command line, no second import of Dagster, the code location and the storage), the
    steps are forked from it, and a second run in the same process reuses it."""
    import multiprocessing.forkserver as mp_forkserver
    from pathlib import Path

    from dagster._grpc.impl import core_execute_run

    from release_platform import execution

    _demo_instance_env(seeded_demo, tmp_path, monkeypatch)
    server = mp_forkserver._forkserver
    server._stop()
    started = _record_server_starts(monkeypatch)
    recon_job = dg.reconstructable(execution.behavior_session_job)
    try:
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("behavior_session", ["3001"])
            for attempt in range(2):
                run = instance.create_run_for_job(job_def=recon_job.get_definition(), tags={"dagster/partition": "3001"})
                events = list(core_execute_run(recon_job, run, instance, inject_env_vars=False))
                assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS, [
                    e.message for e in events if e.is_failure]
                _step_workers([r.dagster_event for r in instance.all_logs(run.run_id) if r.dagster_event])
        assert len(started) == 2 and started[0][0] == started[1][0]  # the second run reused the server
        pid, preload = started[0]
        assert _cmdline(pid) == Path("/proc/self/cmdline").read_bytes()  # forked from this process, not a new interpreter
        assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
        # the job's preload, whose last module only warms the steps' caches here (the run worker has resolved the
        # job and opened the instance itself)
        assert preload == [m for m in execution.forkserver_preload("behavior_session_job")
                           if m.startswith("release_platform")]
    finally:
        server._stop()


def test_only_a_run_worker_forks_its_fork_server():
    from release_platform import execution

    assert execution.in_run_worker() is False  # a test, the CLI, a code server: the standard server


def test_the_forked_server_can_be_switched_off(monkeypatch):
    """``RELEASE_PLATFORM_FORKED_SERVER=0``: even a run worker starts the standard library's server."""
    from release_platform import execution

    forked = []
    monkeypatch.setattr(execution, "in_run_worker", lambda: True)
    monkeypatch.setattr(execution, "_fork_server", lambda modules: forked.append(modules))
    monkeypatch.setattr("multiprocessing.forkserver.ensure_running", lambda: None)
    monkeypatch.setenv(execution.FORKED_SERVER_ENV, "0")
    execution.start_fork_server(["release_platform.definitions"])
    assert forked == []
    monkeypatch.delenv(execution.FORKED_SERVER_ENV)
    execution.start_fork_server(["release_platform.definitions"])
    assert len(forked) == (1 if execution._FORKED_SERVER_SUPPORTED else 0)


@dg.op
def _step_that_dies():
    os._exit(3)  # the step's process ends without a word, as on a segfault or the OOM killer


@dg.op
def _step_that_succeeds():
    return 1


def _crashing_job() -> dg.JobDefinition:
    from release_platform import execution

    @dg.job(executor_def=execution.select_executor())
    def crashing_job():
        _step_that_dies()
        _step_that_succeeds()

    return crashing_job


def test_a_step_process_dying_fails_its_step_not_the_run_worker_or_its_fork_server(tmp_path, monkeypatch):
    """Executed as a run worker executes a run (the fork server forked from this process): a step whose process
    dies fails alone, the other step succeeds, and the run ends as failed instead of hanging or taking the run's
    process down."""
    import multiprocessing.forkserver as mp_forkserver
    import shutil
    from pathlib import Path

    from dagster._grpc.impl import core_execute_run

    from release_platform import execution
    from release_platform.dagster_home import CONFIG_DIR

    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(CONFIG_DIR / "dagster.yaml", dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.delenv(execution.EXECUTOR_ENV, raising=False)
    server = mp_forkserver._forkserver
    server._stop()
    started = _record_server_starts(monkeypatch)
    recon_job = dg.reconstructable(_crashing_job)
    try:
        with dg.DagsterInstance.get() as instance:
            run = instance.create_run_for_job(job_def=recon_job.get_definition())
            list(core_execute_run(recon_job, run, instance, inject_env_vars=False))
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
            events = [r.dagster_event for r in instance.all_logs(run.run_id) if r.dagster_event]
            outcome = {e.step_key: e.event_type_value for e in events
                       if e.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE")}
            assert outcome == {"_step_that_succeeds": "STEP_SUCCESS", "_step_that_dies": "STEP_FAILURE"}
        (pid, _), = started
        assert _cmdline(pid) == Path("/proc/self/cmdline").read_bytes()  # the server forked from this process
        assert server._forkserver_pid == pid and os.waitpid(pid, os.WNOHANG) == (0, 0)  # and still serving
    finally:
        server._stop()


# --- the fork server warms the steps' caches --------------------------------------------------------------------

WARM_REPORT_ENV = "RELEASE_PLATFORM_TEST_WARM_REPORT"
WARM_UPS_ENV = "RELEASE_PLATFORM_STEP_WARM_UPS"  # step_preload's; importing that module here would warm this process


@dg.op
def _report_warm_caches():
    """Writes what this step process finds built before it uses anything (it was forked from the fork server)."""
    from alembic.script import ScriptDirectory

    from release_platform.assets import step_preload
    from release_platform.nwb import protocol

    report = {"pid": os.getpid(), "warmed": list(step_preload.WARMED), "validators": sorted(protocol._VALIDATORS),
              "validator_ids": {name: id(v) for name, v in protocol._VALIDATORS.items()},
              "migration_scripts": bool(getattr(ScriptDirectory.from_config, "caches_dagster_scripts", False)),
              "matplotlib": "matplotlib" in sys.modules}
    with open(os.path.join(os.environ[WARM_REPORT_ENV], f"{os.getpid()}.json"), "w") as f:
        json.dump(report, f)


def _behavior_named_job() -> dg.JobDefinition:
    """A job named like the behavior session job, so the executor preloads (and warms) what behavior steps use."""
    from release_platform import execution

    @dg.job(name="behavior_session_job", executor_def=execution.select_executor())
    def behavior_session_job():
        _report_warm_caches()
        _report_warm_caches.alias("second")()

    return behavior_session_job


def _warm_reports(tmp_path, monkeypatch, run_worker: bool, warm_ups: str | None = None) -> tuple[list[dict], int]:
    """Runs :func:`_behavior_named_job` (as a run worker runs it, or orchestrated in this process); the steps'
    reports and the fork server's pid (the server is left running: the caller stops it)."""
    import multiprocessing.forkserver as mp_forkserver
    import shutil

    from dagster._grpc.impl import core_execute_run

    from release_platform import execution
    from release_platform.dagster_home import CONFIG_DIR

    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copyfile(CONFIG_DIR / "dagster.yaml", dagster_home / "dagster.yaml")
    reports = tmp_path / "reports"
    reports.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv(WARM_REPORT_ENV, str(reports))
    monkeypatch.delenv(execution.EXECUTOR_ENV, raising=False)
    if warm_ups is None:
        monkeypatch.delenv(WARM_UPS_ENV, raising=False)
    else:
        monkeypatch.setenv(WARM_UPS_ENV, warm_ups)
    mp_forkserver._forkserver._stop()
    recon_job = dg.reconstructable(_behavior_named_job)
    with dg.DagsterInstance.get() as instance:
        if run_worker:
            run = instance.create_run_for_job(job_def=recon_job.get_definition())
            list(core_execute_run(recon_job, run, instance, inject_env_vars=False))
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS
        else:
            assert dg.execute_job(recon_job, instance=instance).success
    found = [json.loads(p.read_text()) for p in sorted(reports.glob("*.json"))]
    assert len(found) == 2 and os.getpid() not in {r["pid"] for r in found}
    return found, mp_forkserver._forkserver._forkserver_pid


def _server_holds(pid: int) -> dict:
    """What process ``pid`` holds open: its threads, the paths of its file descriptors, its TCP sockets."""
    fds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
    tcp_inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = open(f"/proc/{pid}/net/{table}").read().splitlines()[1:]
        except OSError:
            continue
        tcp_inodes |= {line.split()[9] for line in lines}
    sockets = {t[len("socket:["):-1] for t in fds.values() if t.startswith("socket:[")}
    return {"threads": len(os.listdir(f"/proc/{pid}/task")), "fds": fds, "tcp": sockets & tcp_inodes}



@pytest.mark.parametrize("run_worker", [False, True], ids=["standard_server", "forked_server"])
def test_the_fork_server_warms_the_caches_of_the_jobs_steps_once(tmp_path, monkeypatch, run_worker):
    """Both fork servers (the standard one, and the one forked from a run worker) build the steps' caches before
    they fork any step: a step finds the NWB validators, NWB Inspector's selection, pandera's backends and Dagster's
    migration scripts built, inherited, not rebuilt (the same objects in both steps). The behavior job's preload
    leaves matplotlib to the step drawing figures."""
    import multiprocessing.forkserver as mp_forkserver

    try:
        reports, _ = _warm_reports(tmp_path, monkeypatch, run_worker)
        behavior_warm_ups = ["dagster_migration_scripts", "nwb_validators", "nwb_inspector", "table_validation"]
        for report in reports:
            if run_worker:  # and what the run worker had imported (matplotlib, if this process drew a figure before)
                assert report["warmed"][:4] == behavior_warm_ups and set(report["warmed"][4:]) <= {"qc_figures"}
            else:
                assert report["warmed"] == behavior_warm_ups
            assert report["migration_scripts"]
            assert "ndx-release-platform" in report["validators"] and "hdmf-experimental" not in report["validators"]
            # (a forked server has whatever its run worker imported: only the fresh interpreter shows the preload)
            assert report["matplotlib"] is False or run_worker
        assert reports[0]["validator_ids"] == reports[1]["validator_ids"]  # built once, in the server
    finally:
        mp_forkserver._forkserver._stop()


def test_without_the_warm_up_the_steps_find_nothing_built(tmp_path, monkeypatch):
    """``RELEASE_PLATFORM_STEP_WARM_UPS=none``: the server warms nothing, and a step finds no cache built (what the
    test above observes is the server's warm-up)."""
    import multiprocessing.forkserver as mp_forkserver

    try:
        # the standard server: a fresh interpreter, which has nothing built unless it builds it
        reports, _ = _warm_reports(tmp_path, monkeypatch, run_worker=False, warm_ups="none")
        for report in reports:
            assert report["warmed"] == [] and report["validators"] == [] and not report["migration_scripts"]
    finally:
        mp_forkserver._forkserver._stop()


def test_the_standard_fork_server_holds_no_file_connection_or_thread_after_warming(tmp_path, monkeypatch):
    """After the run (the server resolved the repository, opened and closed the SQLite instance, warmed the caches
    and forked the steps), the standard server has no TCP socket and no file of the instance, the storage or any
    data file open (its threads: see the next test)."""
    import multiprocessing.forkserver as mp_forkserver

    try:
        _, pid = _warm_reports(tmp_path, monkeypatch, run_worker=False)
        holds = _server_holds(pid)
        assert holds["tcp"] == set()
        opened = [t for t in holds["fds"].values() if t.startswith("/")]
        assert not [t for t in opened if t.startswith(str(tmp_path)) or t.endswith((".db", ".sqlite", ".nwb", ".h5",
                                                                                     ".parquet", ".yaml", ".ttf"))], opened
    finally:
        mp_forkserver._forkserver._stop()


def test_warming_the_step_caches_opens_nothing_it_leaves_open(tmp_path):
    """In a fresh process with the behavior job's libraries imported, the warm-ups leave no file descriptor and no
    thread behind (Python's, or the process's: NumPy's BLAS starts its own threads at import, before)."""
    code = (
        "import importlib, json, os, threading\n"
        "import release_platform.execution as ex\n"
        "for m in ex.forkserver_preload('behavior_session_job')[:-1]:\n    importlib.import_module(m)\n"
        "before = sorted(os.listdir('/proc/self/fd')); threads = [threading.active_count(), len(os.listdir('/proc/self/task'))]\n"
        "ex._IN_FORKED_SERVER = True  # the instance part is another matter: only the warm-ups here\n"
        "from release_platform.assets import step_preload\n"
        "print(json.dumps({'warmed': step_preload.WARMED, 'before': before, 'after': sorted(os.listdir('/proc/self/fd')),"
        " 'threads': [threads, [threading.active_count(), len(os.listdir('/proc/self/task'))]]}))\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    env.pop("RELEASE_PLATFORM_STEP_WARM_UPS", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["warmed"] == ["dagster_migration_scripts", "nwb_validators", "nwb_inspector", "table_validation"]
    assert out["after"] == out["before"]
    assert out["threads"][0] == out["threads"][1] and out["threads"][0][0] == 1
