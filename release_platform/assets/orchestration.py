"""Runs and concurrency-pool slots: who holds a slot, whether its process still lives, and freeing slots of
runs that are gone.

Heavy steps claim a slot of the ``release_platform_heavy`` pool (``pools.default_limit`` in dagster.yaml).
Dagster frees a slot when the step ends; a run whose process is killed never gets there, so its slot stays
claimed and every later heavy step waits for it. Two mechanisms give such slots back:

* runs launched by the Dagster daemon: the code server marks a run whose worker died as failed, and run
  monitoring (``run_monitoring`` in dagster.yaml, ``free_slots_after_run_end_seconds``) frees its slots;
* runs started by ``release-platform`` (``execute_in_process``): each run carries the pid, host and process
  start time of the command that runs it (:func:`owner_tags`), so :func:`diagnose` can tell a live run from a
  dead one on this machine, and :func:`repair` marks dead runs failed and frees their slots.
  ``release-platform doctor`` shows the diagnosis and repairs on ``--fix``; ``materialize`` repairs on its own
  whenever one of its steps waits for a slot held by a dead run (:class:`SlotWaitWatcher`).

Everything here uses the instance's public run methods and the event log storage's concurrency methods
(``get_concurrency_keys``, ``get_concurrency_info``, ``free_concurrency_slots_for_run``); the two things
that need Dagster internals, :func:`interrupt_captured` (the flag Dagster sets on SIGINT/SIGTERM) and
:func:`sleep_while_waiting_for_slots` (an in-process run waiting for a slot sleeps instead of spinning), are in
:mod:`release_platform.assets.dagster_internals`.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import dagster as dg

from release_platform.assets.dagster_internals import interrupt_captured

TAG_PID = "release_platform/pid"
TAG_HOST = "release_platform/host"
TAG_PROCESS_START = "release_platform/process_start"

FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
IN_PROGRESS = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


# -- who runs a run --------------------------------------------------------------------------------------
def process_start(pid: int) -> Optional[str]:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None if unknown.

    Together with the pid it names one process: a pid reused by a later process has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def owner_tags() -> dict[str, str]:
    """Run tags naming this process as the one executing the run (for :func:`diagnose`)."""
    pid = os.getpid()
    return {TAG_PID: str(pid), TAG_HOST: socket.gethostname(), TAG_PROCESS_START: process_start(pid) or ""}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner_alive(tags: dict[str, str]) -> Optional[bool]:
    """True/False when the run's process is known (tagged, on this host); None when it cannot be told from here."""
    pid_text = tags.get(TAG_PID)
    if not pid_text or tags.get(TAG_HOST) != socket.gethostname():
        return None
    pid = int(pid_text)
    if not _pid_alive(pid):
        return False
    started = tags.get(TAG_PROCESS_START)
    current = process_start(pid)
    if started and current and started != current:
        return False  # the pid now belongs to another process
    return True


# -- diagnosis -------------------------------------------------------------------------------------------
@dataclass
class RunState:
    """One run that holds or waits for pool slots, or is still marked in progress."""

    run_id: str
    status: str
    job_name: str
    partition: Optional[str]
    owner: Optional[str]  # "pid 123 on host" for runs started by release-platform
    alive: Optional[bool]  # None: cannot tell from this machine
    held: list[tuple[str, str]] = field(default_factory=list)  # (pool, step_key)
    waiting: list[tuple[str, str]] = field(default_factory=list)  # (pool, step_key)

    @property
    def verdict(self) -> str:
        """``finished`` (done but slots still claimed), ``dead`` (its process is gone), ``running``, ``unknown``."""
        if self.status in {s.value for s in FINISHED}:
            return "finished"
        if self.alive is False:
            return "dead"
        return "running" if self.alive else "unknown"

    @property
    def repairable(self) -> bool:
        """Slots of this run may be freed without stopping anything that still runs."""
        return self.verdict in ("finished", "dead")

    def describe(self) -> str:
        where = f" partition {self.partition}" if self.partition else ""
        owner = f", {self.owner}" if self.owner else ""
        state = {"finished": "finished", "dead": "process gone", "running": "running",
                 "unknown": "running elsewhere or not started by release-platform"}[self.verdict]
        parts = [f"run {self.run_id} ({self.job_name}{where}, {self.status}{owner}): {state}"]
        if self.held:
            parts.append("holds " + ", ".join(f"{pool} slot ({step})" for pool, step in self.held))
        if self.waiting:
            parts.append("waits for " + ", ".join(f"{pool} slot ({step})" for pool, step in self.waiting))
        return "; ".join(parts)


def _state_for(instance: dg.DagsterInstance, run_id: str, run: Optional[dg.DagsterRun] = None) -> RunState:
    run = run or instance.get_run_by_id(run_id)
    if run is None:  # slots of a deleted run: nothing runs it
        return RunState(run_id, "DELETED", "?", None, None, False)
    tags = dict(run.tags)
    owner = f"pid {tags[TAG_PID]} on {tags.get(TAG_HOST, '?')}" if tags.get(TAG_PID) else None
    return RunState(run_id, run.status.value, run.job_name, tags.get("dagster/partition"), owner,
                     None if run.status in FINISHED else owner_alive(tags))


def pool_usage(instance: dg.DagsterInstance) -> dict[str, tuple[list, list]]:
    """Per pool: (claimed slots, pending steps) as Dagster records them."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    out = {}
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        out[pool] = (list(info.claimed_slots), list(info.pending_steps))
    return out


def diagnose(instance: dg.DagsterInstance) -> list[RunState]:
    """Every run that holds a pool slot, waits for one, or is marked in progress, with a verdict."""
    states: dict[str, RunState] = {}

    def state(run_id: str) -> RunState:
        if run_id not in states:
            states[run_id] = _state_for(instance, run_id)
        return states[run_id]

    for pool, (claimed, pending) in pool_usage(instance).items():
        held = {(s.run_id, s.step_key) for s in claimed}
        for run_id, step in sorted(held):
            state(run_id).held.append((pool, step))
        for p in pending:
            if (p.run_id, p.step_key) not in held:
                state(p.run_id).waiting.append((pool, p.step_key))
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS)):
        run = record.dagster_run
        if run.run_id not in states:
            states[run.run_id] = _state_for(instance, run.run_id, run)
    return sorted(states.values(), key=lambda s: (s.verdict not in ("dead", "finished"), s.run_id))


def repair(instance: dg.DagsterInstance, states: Iterable[RunState], force_run_ids: Iterable[str] = ()) -> list[str]:
    """Mark dead runs failed and free the slots of dead and finished runs (and of ``force_run_ids`` whose
    state cannot be told from here). A run known to be alive is never touched. Returns what was done."""
    force = set(force_run_ids)
    done = []
    for st in states:
        if not (st.repairable or (st.run_id in force and st.verdict == "unknown")):
            continue
        run = instance.get_run_by_id(st.run_id)
        if run is not None and run.status not in FINISHED:
            why = f"its process ({st.owner}) is gone" if st.verdict == "dead" else "freed by release-platform doctor"
            instance.report_run_failed(run, f"Marked failed: {why}; its concurrency slots were freed.")
        if st.held or st.waiting:
            instance.event_log_storage.free_concurrency_slots_for_run(st.run_id)
        freed = ", ".join(f"{pool} ({step})" for pool, step in st.held) or "no slot"
        done.append(f"run {st.run_id}: {'marked failed, ' if run is not None and run.status not in FINISHED else ''}"
                    f"freed {freed}")
    return done


# -- a step waiting for a slot ---------------------------------------------------------------------------
class WaitInterrupted(KeyboardInterrupt):
    """Raised in the main thread to stop a run that waits for a pool slot after Ctrl-C (or SIGTERM)."""


def _raise_wait_interrupted(signum, frame):  # runs in the main thread
    raise WaitInterrupted()


INTERRUPT_SIGNAL = signal.SIGUSR1


class SlotWaitWatcher(threading.Thread):
    """While ``run_id`` executes in this process: say when one of its steps waits for a pool slot and which
    run holds it, free slots held by runs whose process is gone, and stop the run on Ctrl-C while it waits.

    Use as a context manager in the main thread around ``execute_in_process``.
    """

    def __init__(self, instance: dg.DagsterInstance, run_id: str, label: str, say: Callable[[str], None],
                 poll_s: float = 1.0, remind_s: float = 60.0):
        super().__init__(name="slot-wait-watcher", daemon=True)
        self.instance, self.run_id, self.label, self.say = instance, run_id, label, say
        self.poll_s, self.remind_s = poll_s, remind_s
        self.interrupted = False
        self.repairs: list[str] = []
        self._done = threading.Event()
        self._main = threading.main_thread().ident
        self._previous_handler = None

    def __enter__(self) -> "SlotWaitWatcher":
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(INTERRUPT_SIGNAL, _raise_wait_interrupted)
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self.join(10)
        if self._previous_handler is not None:
            signal.signal(INTERRUPT_SIGNAL, self._previous_handler)

    def run(self) -> None:
        last_said: tuple = ()
        said_at = 0.0
        interrupt_seen = 0
        while not self._done.wait(self.poll_s):
            try:
                waiting = self._waiting()
                if not waiting:
                    interrupt_seen = 0
                    continue
                if interrupt_captured():
                    interrupt_seen += 1
                    if interrupt_seen >= 2:  # not picked up by a step starting: the run only waits
                        self._interrupt(waiting)
                        return
                    continue
                holders = self._holders(waiting)
                dead = [h for h in holders if h.repairable]
                if dead:
                    for st, line in zip(dead, repair(self.instance, dead)):
                        self.repairs.append(line)
                        why = "was killed (its process is gone)" if st.verdict == "dead" else "had ended"
                        self.say(f"{self.label}: the slot it waits for was held by a run that {why}: {line}")
                    continue
                key = (tuple(waiting), tuple(h.run_id for h in holders))
                if holders and (key != last_said or time.monotonic() - said_at > self.remind_s):
                    self.say(self._waiting_message(waiting, holders))
                    last_said, said_at = key, time.monotonic()
            except Exception as exc:  # the watcher must never take the run down
                self.say(f"{self.label}: could not inspect the concurrency pools: {exc}")

    def _waiting(self) -> list[tuple[str, str]]:
        out = []
        for pool, (claimed, pending) in pool_usage(self.instance).items():
            mine_held = {s.step_key for s in claimed if s.run_id == self.run_id}
            out += [(pool, p.step_key) for p in pending if p.run_id == self.run_id and p.step_key not in mine_held]
        return sorted(out)

    def _holders(self, waiting: list[tuple[str, str]]) -> list[RunState]:
        """The other runs holding slots of the pools ``waiting`` waits for, each with what it holds."""
        pools = {pool for pool, _ in waiting}
        held: dict[str, list[tuple[str, str]]] = {}
        for pool, (claimed, _) in pool_usage(self.instance).items():
            for slot in claimed:
                if pool in pools and slot.run_id != self.run_id:
                    held.setdefault(slot.run_id, []).append((pool, slot.step_key))
        states = []
        for run_id in sorted(held):
            st = _state_for(self.instance, run_id)
            st.held = held[run_id]
            states.append(st)
        return states

    def _waiting_message(self, waiting, holders: list[RunState]) -> str:
        steps = ", ".join(f"{step} waits for a {pool} slot" for pool, step in waiting)
        held = "; ".join(h.describe() for h in holders)
        return f"{self.label}: {steps}, held by {held}. Ctrl-C stops waiting; release-platform doctor lists the pools."

    def _interrupt(self, waiting) -> None:
        self.interrupted = True
        run = self.instance.get_run_by_id(self.run_id)
        if run is not None and run.status not in FINISHED:
            self.instance.report_run_canceling(run, "Interrupted while waiting for a concurrency slot.")
        self.say(f"{self.label}: interrupted while {', '.join(step for _, step in waiting)} waited for a slot; "
                 f"stopping run {self.run_id}")
        signal.pthread_kill(self._main, INTERRUPT_SIGNAL)
