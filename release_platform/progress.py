"""Progress of long commands: a bar on a terminal, plain periodic lines otherwise.

One :class:`Progress` per piece of work counts items (files, sessions, partitions) and, when the work is about
bytes, bytes, with the rate and the estimated time left. On a terminal it draws a ``tqdm`` bar (tqdm is already
installed with Dagster); when the stream is not a terminal (a log file, CI, a pipe) it writes one plain line when
the plan is known, one every ``interval_s`` seconds while work goes on, and a last line with the totals:

.. code-block:: text

    release 1.0.0: 40 files, 3.4 GB
    release 1.0.0: 12/40 files, 1.2 GB/3.4 GB, 45.0 MB/s, ETA 0:49
    release 1.0.0: done, 40 files, 3.4 GB in 1:15 (45.3 MB/s)

Callers: ``plan(items, total_bytes)`` once the work is known, ``advance(key, nbytes)`` as a file (or session)
grows (cumulative bytes of that key; callable from several threads), ``finish(key, nbytes)`` when it is complete
(counted once per key), ``close()`` (or ``with``). An instance is also a callable ``(key, done_bytes, size)``, the
per-block callback of :func:`release_platform.release.copy.copy_files`.

``RELEASE_PLATFORM_PROGRESS``: ``auto`` (default: bar on a terminal, lines otherwise), ``bar``, ``lines`` or ``off``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Optional, TextIO

from tqdm import tqdm

from release_platform.atomic import format_bytes

__all__ = ["Progress", "progress_mode", "ENV", "format_bytes", "format_duration"]

ENV = "RELEASE_PLATFORM_PROGRESS"
MODES = ("auto", "bar", "lines", "off")


def progress_mode(stream: TextIO) -> str:
    """``bar``, ``lines`` or ``off`` for ``stream``, from :data:`ENV` (``auto``: a bar only on a terminal)."""
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        mode = "auto"
    if mode == "auto":
        isatty = getattr(stream, "isatty", None)
        mode = "bar" if isatty is not None and isatty() else "lines"
    return mode


def format_duration(seconds: float) -> str:
    return tqdm.format_interval(max(0.0, seconds))


class Progress:
    """Counts items and bytes of one piece of work and shows them (see the module docstring)."""

    def __init__(self, label: str, *, unit: str = "files", stream: Optional[TextIO] = None, interval_s: float = 5.0,
                 mode: Optional[str] = None, clock: Callable[[], float] = time.monotonic):
        self.label, self.unit = label, unit
        self.stream = stream if stream is not None else sys.stderr
        self.mode = mode or progress_mode(self.stream)
        self.interval_s = interval_s
        self.clock = clock
        self.total_items: Optional[int] = None
        self.total_bytes: Optional[int] = None
        self.items = 0
        self._bytes: dict[str, int] = {}
        self._finished: set[str] = set()
        self._lock = threading.Lock()
        self._started = clock()
        self._last_line = self._started
        self._bar: Optional[tqdm] = None
        self._closed = False

    # -- what callers report ------------------------------------------------------------------------------
    def plan(self, items: Optional[int], total_bytes: Optional[int] = None) -> None:
        with self._lock:
            if self.total_items is not None and items is not None:  # a second stage of the same work: add it
                items += self.total_items
            if self.total_bytes is not None and total_bytes is not None:
                total_bytes += self.total_bytes
            self.total_items, self.total_bytes = items, total_bytes
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            if self.mode == "bar":
                by_bytes = total_bytes is not None
                self._bar = tqdm(total=total_bytes if by_bytes else items, desc=self.label, file=self.stream,
                                 unit="B" if by_bytes else f" {self.unit}", unit_scale=by_bytes, unit_divisor=1000,
                                 dynamic_ncols=True, leave=True)
                self._bar.update(self._bar_position())
            elif self.mode == "lines":
                parts = [f"{items} {self.unit}" if items is not None else None,
                         format_bytes(total_bytes) if total_bytes is not None else None]
                self._say(f"{self.label}: {', '.join(p for p in parts if p) or 'starting'}")

    def advance(self, key: str, nbytes: int) -> None:
        """``key`` (a file, a session) has ``nbytes`` done so far (cumulative for that key)."""
        with self._lock:
            self._bytes[key] = max(int(nbytes), self._bytes.get(key, 0))
            self._tick()

    def finish(self, key: str, nbytes: int = 0) -> None:
        """``key`` is complete (``nbytes`` in all); counted once however often it is reported."""
        with self._lock:
            self._bytes[key] = max(int(nbytes), self._bytes.get(key, 0))
            if key not in self._finished:
                self._finished.add(key)
                self.items += 1
            self._tick()

    def __call__(self, key: str, done: int, size: int) -> None:
        """The per-block callback of the release copy: ``(destination, bytes done in this file, file size)``."""
        self.advance(key, done)

    # -- totals ---------------------------------------------------------------------------------------------
    @property
    def bytes_done(self) -> int:
        return sum(self._bytes.values())

    def _bar_position(self) -> int:
        return self.bytes_done if self.total_bytes is not None else self.items

    def status(self) -> str:
        """``12/40 files, 1.2 GB/3.4 GB, 45.0 MB/s, ETA 0:49`` (the parts that are known): by bytes when the total
        bytes are known, else by items."""
        elapsed = self.clock() - self._started
        parts = [f"{self.items}/{self.total_items} {self.unit}" if self.total_items is not None else f"{self.items} {self.unit}"]
        done = self.bytes_done
        if self.total_bytes is not None:
            rate = done / elapsed if elapsed > 0 else 0.0
            parts += [f"{format_bytes(done)}/{format_bytes(self.total_bytes)}", f"{format_bytes(rate)}/s"]
            remaining = self.total_bytes - done
        else:
            rate = self.items / elapsed if elapsed > 0 else 0.0
            if done:
                parts.append(format_bytes(done))
            parts.append(f"{rate * 60:.1f} {self.unit}/min")
            remaining = None if self.total_items is None else self.total_items - self.items
        if remaining is not None and rate > 0:
            parts.append(f"ETA {format_duration(remaining / rate)}")
        return ", ".join(parts)

    # -- output ---------------------------------------------------------------------------------------------
    def _say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def _tick(self) -> None:
        if self.mode == "bar" and self._bar is not None:
            self._bar.update(self._bar_position() - self._bar.n)
            self._bar.set_postfix_str(f"{self.items}/{self.total_items} {self.unit}" if self.total_items is not None else "",
                                      refresh=False)
        elif self.mode == "lines":
            now = self.clock()
            if now - self._last_line >= self.interval_s:
                self._last_line = now
                self._say(f"{self.label}: {self.status()}")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.close()
            if self.mode == "off":
                return
            elapsed = self.clock() - self._started
            amount = f"{self.items} {self.unit}"
            if self.bytes_done:
                rate = self.bytes_done / elapsed if elapsed > 0 else 0.0
                amount += f", {format_bytes(self.bytes_done)} in {format_duration(elapsed)} ({format_bytes(rate)}/s)"
            else:
                amount += f" in {format_duration(elapsed)}"
            if self.mode == "lines":
                self._say(f"{self.label}: done, {amount}")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
