"""Where steps run: the multiprocess executor of one machine (default) or Celery workers on a broker.

``RELEASE_PLATFORM_EXECUTOR=celery`` selects Celery for every job of the code location; nothing else
changes (assets, jobs, checks and the instance are the same). The broker is
``RELEASE_PLATFORM_CELERY_BROKER`` (default ``redis://127.0.0.1:6379/0``; ``amqp://guest:guest@host:5672//``
for RabbitMQ), the result backend ``RELEASE_PLATFORM_CELERY_BACKEND`` (default: the broker when it is Redis).
Workers start with ``release-platform worker`` and must see the same Dagster instance (PostgreSQL through
``RELEASE_PLATFORM_DAGSTER_PG_URL``), LIMS and storage root as the process that launches runs.

Heavy steps (those in the ``release_platform_heavy`` pool: movie streaming, LFP) are sent to their own queue,
``release_platform_heavy``, so a worker pool can be sized for them; the pool's slots, kept in the Dagster
instance, still cap how many run at once across all workers.

Faults: tasks are acknowledged late and rejected (re-queued) when the worker process running them dies, so a
step whose worker is killed runs again on another worker; steps of the session jobs retry with backoff on
transient errors (e.g. LIMS unavailable) and never on input errors (raised as ``Failure(allow_retries=False)``).
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from typing import Sequence

import dagster as dg

from release_platform.assets.partitions import HEAVY_POOL

EXECUTOR_ENV = "RELEASE_PLATFORM_EXECUTOR"
BROKER_ENV = "RELEASE_PLATFORM_CELERY_BROKER"
BACKEND_ENV = "RELEASE_PLATFORM_CELERY_BACKEND"
KEY_PREFIX_ENV = "RELEASE_PLATFORM_CELERY_KEY_PREFIX"
VISIBILITY_TIMEOUT_ENV = "RELEASE_PLATFORM_CELERY_VISIBILITY_TIMEOUT"
DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "dagster"
HEAVY_QUEUE = HEAVY_POOL
QUEUES = (DEFAULT_QUEUE, HEAVY_QUEUE)
# Redis (and SQS) re-deliver a message nobody acknowledged after this many seconds: it must exceed the
# longest step, or a step still running is started a second time elsewhere.
DEFAULT_VISIBILITY_TIMEOUT_S = 4 * 3600

# Transient failures (LIMS unavailable, a broker reconnect, a flaky file server) retry with exponential
# backoff: ~10 s, 20 s, 40 s. Input errors are raised as Failure(allow_retries=False) and never retry.
STEP_RETRY_POLICY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def step_retry_policy() -> dg.RetryPolicy | None:
    """The session jobs' step retry policy on Celery workers; none on one machine, where a failure is
    reported at once to the person running the command."""
    return STEP_RETRY_POLICY if executor_name() == "celery" else None


def executor_name() -> str:
    """``multiprocess`` (default) or ``celery``, from ``RELEASE_PLATFORM_EXECUTOR``."""
    name = (os.environ.get(EXECUTOR_ENV) or "multiprocess").strip().lower()
    if name not in ("multiprocess", "celery"):
        raise ValueError(f"{EXECUTOR_ENV}={name!r}: expected 'multiprocess' or 'celery'")
    return name


def broker_url() -> str:
    return os.environ.get(BROKER_ENV) or DEFAULT_BROKER


def backend_url() -> str:
    """The result backend: ``RELEASE_PLATFORM_CELERY_BACKEND``, else the broker if it is Redis, else ``rpc://``."""
    explicit = os.environ.get(BACKEND_ENV)
    if explicit:
        return explicit
    broker = broker_url()
    return broker if broker.startswith(("redis://", "rediss://")) else "rpc://"


def celery_settings() -> dict:
    """Settings of the Celery app, identical for the process that submits steps and for the workers."""
    visibility = float(os.environ.get(VISIBILITY_TIMEOUT_ENV) or DEFAULT_VISIBILITY_TIMEOUT_S)
    transport = {"visibility_timeout": visibility, "max_retries": 10, "interval_start": 0, "interval_step": 1,
                 "interval_max": 5}
    backend_transport: dict = {}
    prefix = os.environ.get(KEY_PREFIX_ENV)
    if prefix:  # several platforms (or test runs) can share one Redis without seeing each other's tasks
        transport["global_keyprefix"] = prefix
        backend_transport["global_keyprefix"] = prefix
    return {
        "task_acks_late": True,  # acknowledge after the step ran, not when it was received
        "task_reject_on_worker_lost": True,  # the worker process died mid-step: put the task back on the queue
        "worker_prefetch_multiplier": 1,  # a worker reserves one step at a time; others stay on the queue
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_priority": 5,
        "broker_transport_options": transport,
        "result_backend_transport_options": backend_transport,
        "broker_connection_retry_on_startup": True,
        "result_expires": 7 * 24 * 3600,
    }


def queue_for_step(step, default_queue: str) -> str:
    """An explicit ``dagster-celery/queue`` tag wins; else heavy-pool steps go to the heavy queue."""
    from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG

    explicit = step.tags.get(DAGSTER_CELERY_QUEUE_TAG)
    if explicit:
        return explicit
    return HEAVY_QUEUE if getattr(step, "pool", None) == HEAVY_POOL else default_queue


def _submit_routed(app, plan_context, step, queue, priority, known_state):
    from dagster_celery.executor import _submit_task

    routed = queue_for_step(step, queue)
    if routed != queue:  # dagster-celery's own "Submitting ... to queue" event names the queue before routing
        plan_context.log.info(f'step "{step.key}" (pool {step.pool}) sent to queue "{routed}"')
    return _submit_task(app, plan_context, step, routed, priority, known_state)


def _celery_executor_class():
    from dagster_celery.executor import CeleryExecutor

    class PoolRoutedCeleryExecutor(CeleryExecutor):
        """dagster-celery's executor, sending heavy-pool steps to the heavy queue."""

        def execute(self, plan_context, execution_plan):
            from dagster_celery.core_execution_loop import core_celery_execution_loop

            return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=_submit_routed)

    return PoolRoutedCeleryExecutor


def _make_celery_executor_def() -> dg.ExecutorDefinition:
    from dagster_celery.executor import CELERY_CONFIG

    from release_platform.assets.dagster_internals import step_retry_mode

    @dg.executor(name="release_platform_celery", config_schema=CELERY_CONFIG,
                 requirements=dg.multiple_process_executor_requirements())
    def release_platform_celery_executor(init_context):
        config = init_context.executor_config
        return _celery_executor_class()(
            broker=config.get("broker"), backend=config.get("backend"), include=config.get("include"),
            config_source=config.get("config_source"), retries=step_retry_mode(config["retries"]),
        )

    return release_platform_celery_executor


def celery_executor_config() -> dict:
    return {"broker": broker_url(), "backend": backend_url(), "config_source": celery_settings()}


# The multiprocess executor starts each step's process from a fork server that imported a run's libraries once:
# a step process is a fork with Dagster, the code location, the libraries its steps use (PyNWB and the platform's
# NWB extension, NWB Inspector, pandas/pandera tables, the QC figures, for ophys runs the ophys pipeline) and
# Dagster's storage for the run's instance already loaded, instead of a fresh interpreter importing them all
# again. Loading the code location itself (webserver, code server, run process, sensors) imports none of them.
# The server is started when the run's process creates the executor, before the plan's first step is ready, and
# inherits that process's environment (a run's environment does not change while it runs); a module missing from
# the preload is imported by the step using it. In a run worker the server is a fork of the run's process
# (start_fork_server), so only the steps' libraries are imported while the run starts. The last preload module
# (FORKSERVER_LAST) then builds, once in the server, the caches the steps would each build on first use (NWB schema
# validators, NWB Inspector's check selection, pandera's backends, Dagster's storage migration scripts).
SESSION_STEP_LIBRARIES = (
    "release_platform.nwb",
    "nwbinspector",
    "release_platform.metadata.schemas",
    "release_platform.metadata.io",
    # used by several steps of every session job (inputs, metadata, release files)
    "release_platform.lims.client",
    "release_platform.metadata.builders",
    "pyarrow.parquet",
)
QC_FIGURES = "release_platform.qc.session_figures"  # matplotlib (~0.35 s): only the QC report step draws
# Modules of one job's steps beyond SESSION_STEP_LIBRARIES (the ophys pipeline brings SciPy and Numba: only the
# ophys job's steps use it). The behavior job's QC report is a last step beside the metadata steps, which take
# longer: it imports matplotlib itself, and the server, which every step waits for, does not.
JOB_STEP_LIBRARIES = {
    "ophys_session_job": ("release_platform.ophys.pipeline", QC_FIGURES),
    "ecephys_session_job": (QC_FIGURES,),
    "icephys_cell_job": (QC_FIGURES,),
}
# The names of the step caches warmed in this process (release_platform.assets.step_preload.WARMED): kept here,
# because a fork server forked from a run worker imports that module again (to warm the libraries it adds), and a
# cache its parent warmed is not warmed twice.
WARMED_STEP_CACHES: list[str] = []
FORKSERVER_FIRST = "release_platform.definitions"
# Resolves the repository and opens/closes the instance (not in a server forked from a run worker, which has done
# both), then warms the steps' caches.
FORKSERVER_LAST = "release_platform.assets.step_preload"
# Every library any step imports: the preload of a job the code location does not know ahead (e.g. a backfill).
FORKSERVER_PRELOAD = (
    FORKSERVER_FIRST,
    *SESSION_STEP_LIBRARIES,
    *dict.fromkeys(m for modules in JOB_STEP_LIBRARIES.values() for m in modules),
    FORKSERVER_LAST,
)
SESSION_JOB_NAMES = tuple(f"{kind}_job" for kind in ("ophys_session", "behavior_session", "ecephys_session", "icephys_cell"))


def forkserver_preload(job_name: str | None) -> tuple[str, ...]:
    """The modules the fork server imports for a run of ``job_name``: the code location, the libraries of the job's
    steps and the run's storage; every step library for a job that is not a session job."""
    if job_name not in SESSION_JOB_NAMES:
        return FORKSERVER_PRELOAD
    return (FORKSERVER_FIRST, *SESSION_STEP_LIBRARIES, *JOB_STEP_LIBRARIES.get(job_name, ()), FORKSERVER_LAST)


def multiprocess_executor_config() -> dict:
    """Config of the one-machine executor: two steps at a time, step processes forked from a preloaded server (the
    preload is chosen per job when the executor is created, see :func:`forkserver_preload`)."""
    return {"max_concurrent": 2, "start_method": {"forkserver": {}}}


def start_fork_server(preload: Sequence[str], fork: bool | None = None) -> None:
    """Start this process's fork server with ``preload`` now (no-op if one is running). Dagster's executor preloads
    its own module first; the list here is the one it sets, so the server started here is the one it uses.

    In a run worker (``fork`` None: :func:`in_run_worker`) the server is forked from this process, which has already
    imported Dagster, the code location and the instance's storage: the server only imports the libraries of the
    steps and warms their caches (the last preload module skips what the run worker did). Elsewhere (a test, the
    CLI orchestrating a run in its own process, whose threads are not known) it is the standard library's server, a
    fresh interpreter importing the whole preload.
    """
    import multiprocessing
    import multiprocessing.forkserver

    modules = list(dict.fromkeys(["dagster._core.executor.multiprocess", *preload]))
    multiprocessing.get_context("forkserver").set_forkserver_preload(modules)
    if fork is None:
        fork = in_run_worker() and forked_server_enabled()
    if fork and _FORKED_SERVER_SUPPORTED:
        _fork_server(modules)
    multiprocessing.forkserver.ensure_running()  # no-op when the forked server runs; else the standard one


# The forked server drives the standard library's fork-server loop (multiprocessing.forkserver.main) and registers
# itself where the module's client looks (its _forkserver object), as ensure_running() does for the server it
# spawns; that interface is the one of Python 3.10 and 3.11 (3.12 deprecates forking a threaded process, and newer
# versions change the server's protocol), so other versions use the standard server.
_FORKED_SERVER_SUPPORTED = sys.version_info < (3, 12)


FORKED_SERVER_ENV = "RELEASE_PLATFORM_FORKED_SERVER"
"""Environment variable: ``0`` makes a run worker start the standard library's fork server (a fresh interpreter)
instead of forking the server from itself."""


def switched_on(name: str) -> bool:
    """An on/off environment switch that is on unless set to ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def forked_server_enabled() -> bool:
    """Whether a run worker may fork its fork server from itself (``RELEASE_PLATFORM_FORKED_SERVER``, default yes)."""
    return switched_on(FORKED_SERVER_ENV)


PG_POOL_ENV = "RELEASE_PLATFORM_PG_CONNECTION_POOL"
"""Environment variable: ``0`` keeps dagster-postgres's own behaviour in run workers and step processes (one
connection per statement, the catalog asked before each dynamic-partition read and asset event)."""


def pool_postgres_storage() -> list[str]:
    """Make the PostgreSQL storages this process creates from now on keep their connections in a small pool and ask
    the database catalog once which tables and columns they have (unless ``RELEASE_PLATFORM_PG_CONNECTION_POOL`` is
    0): what the processes forked from the preloaded servers (run workers, step processes) get. The storage modules
    patched (none on a SQLite instance)."""
    if not switched_on(PG_POOL_ENV):
        return []
    from release_platform.assets.dagster_internals import cache_postgres_schema_checks, pool_postgres_connections

    patched = pool_postgres_connections()
    cache_postgres_schema_checks()
    return patched


def in_run_worker() -> bool:
    """True when called under Dagster's ``core_execute_run``: this process was started by the run launcher to
    execute one run (the code server's run subprocess, or ``dagster api execute_run``). Its only other threads are
    Dagster's termination handler and its event queue's feeder, which the forked server and steps never use."""
    from release_platform.assets.dagster_internals import under_core_execute_run

    return under_core_execute_run()


_IN_FORKED_SERVER = False


def in_forked_server() -> bool:
    """True in a fork server forked from a run worker (:func:`_fork_server`) and in the step processes it forks: the
    run worker resolved the job and opened the instance before, so the server's warm-up skips both."""
    return _IN_FORKED_SERVER


def _fork_server(modules: list[str]) -> None:
    """Fork this process into the fork server of ``multiprocessing.forkserver`` (see :func:`start_fork_server`).

    The child resets SIGINT/SIGTERM to the interpreter's defaults (as in a fresh server), marks itself as a
    forked server (:func:`in_forked_server`), imports ``modules`` and
    serves fork requests until this process exits (its end of the "alive" pipe closes). It leaves with
    ``os._exit``, like the step processes it forks, so nothing it inherited (database connections, queues, the
    run's temporary files) is closed or finalized by it.
    """
    global _IN_FORKED_SERVER
    import signal
    import socket
    from multiprocessing import connection, forkserver, resource_tracker, util

    server = forkserver._forkserver
    if server._forkserver_pid is not None:
        return  # running (or dead: ensure_running() reaps it and starts the standard one)
    resource_tracker.ensure_running()  # before the fork: the server hands its fd to each step, as the standard one
    address = connection.arbitrary_address("AF_UNIX")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        alive_r, alive_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _IN_FORKED_SERVER = True
            sys.modules.pop(FORKSERVER_LAST, None)  # imported again below: it warms what this server preloads
            code = 0
            try:
                os.close(alive_w)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                forkserver.main(listener.fileno(), alive_r, modules)
            except SystemExit:
                pass  # the parent exited: main()'s normal end
            except BaseException:  # noqa: BLE001 - report, and let the client fall back to the standard server
                code = 1
                sys.excepthook(*sys.exc_info())
                sys.stderr.flush()
            finally:
                os._exit(code)
        os.close(alive_r)
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
    server._preload_modules = modules


def _job_name(init_context) -> str | None:
    try:
        return init_context.job.get_definition().name
    except Exception:  # noqa: BLE001 - the preload is an optimisation: any job still runs with the full one
        return None


@dg.executor(name="multiprocess", config_schema=dg.multiprocess_executor.config_schema,
             requirements=dg.multiple_process_executor_requirements())
def preloading_multiprocess_executor(init_context):
    """Dagster's multiprocess executor whose fork server preloads the libraries of the run's job
    (:func:`forkserver_preload`) and is started as soon as the executor is created, so its imports overlap the
    run process's remaining start-up instead of delaying the first step."""
    config = dict(init_context.executor_config)
    start = dict(config.get("start_method") or {})
    preload = None
    if "forkserver" in start:
        forkserver = dict(start["forkserver"] or {})
        if not forkserver.get("preload_modules"):
            forkserver["preload_modules"] = list(forkserver_preload(_job_name(init_context)))
        preload = forkserver["preload_modules"]
        start["forkserver"] = forkserver
        config["start_method"] = start
    executor = dg.multiprocess_executor.executor_creation_fn(init_context._replace(executor_config=config))
    if preload is not None:
        start_fork_server(preload)
    return executor


def select_executor() -> dg.ExecutorDefinition:
    """The executor of the code location, chosen by ``RELEASE_PLATFORM_EXECUTOR``."""
    if executor_name() == "celery":
        return _make_celery_executor_def().configured(celery_executor_config())
    return preloading_multiprocess_executor.configured(multiprocess_executor_config())


def worker_app():
    """The Celery app a worker runs: the same broker, backend and settings as the executor, with
    dagster-celery's step task registered."""
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    from release_platform.assets.dagster_internals import step_retry_mode

    executor = _celery_executor_class()(broker=broker_url(), backend=backend_url(), config_source=celery_settings(),
                                        retries=step_retry_mode())
    app = make_app(executor.app_args())
    create_task(app)
    return app


def run_worker(queues: Sequence[str] = QUEUES, concurrency: int = 1, name: str | None = None,
               loglevel: str = "INFO") -> None:
    """Start a Celery worker in this process (blocks until it is stopped with SIGTERM/SIGINT)."""
    from release_platform.dagster_home import prepare_dagster_home

    unknown = [q for q in queues if not q]
    if unknown or not queues:
        raise ValueError("worker: give at least one non-empty queue name")
    if concurrency < 1:
        raise ValueError(f"worker: concurrency must be >= 1, got {concurrency}")
    os.environ.setdefault(EXECUTOR_ENV, "celery")
    prepare_dagster_home()
    hostname = name or f"release_platform-{os.getpid()}@{socket.gethostname()}"
    app = worker_app()
    app.worker_main(["worker", "-Q", ",".join(queues), "-c", str(concurrency), "-n", hostname, "-P", "prefork",
                     "--loglevel", loglevel, "--without-gossip", "--without-mingle"])


# Reconstructable session jobs: a process (or a worker) rebuilds them from these module-level functions.
def _resolved(job_name: str) -> dg.JobDefinition:
    from release_platform.definitions import defs

    return defs.resolve_job_def(job_name)


def ophys_session_job() -> dg.JobDefinition:
    return _resolved("ophys_session_job")


def behavior_session_job() -> dg.JobDefinition:
    return _resolved("behavior_session_job")


def ecephys_session_job() -> dg.JobDefinition:
    return _resolved("ecephys_session_job")


def icephys_cell_job() -> dg.JobDefinition:
    return _resolved("icephys_cell_job")


RECONSTRUCTABLE_JOBS = {
    "ophys_session": ophys_session_job, "behavior_session": behavior_session_job,
    "ecephys_session": ecephys_session_job, "icephys_cell": icephys_cell_job,
}


def execute_partition(instance, kind: str, partition_key: str) -> dg.ExecutionResult:
    """Run ``<kind>_job`` for one partition with the code location's executor (Celery workers when
    ``RELEASE_PLATFORM_EXECUTOR=celery``); this process orchestrates, the workers run the steps."""
    job = dg.reconstructable(RECONSTRUCTABLE_JOBS[kind])
    return dg.execute_job(job, instance=instance, tags={"dagster/partition": partition_key,
                                                         "release_platform/submitter": uuid.uuid4().hex[:8]})


def cmd_worker(args) -> int:
    """``release-platform worker``: parsed arguments to :func:`run_worker`."""
    run_worker([q.strip() for q in args.queues.split(",")], concurrency=args.concurrency, name=args.name)
    return 0
