"""Reader of rig sync files (the Allen Institute ``sync`` HDF5 format).

A sync file records the digital lines of a rig (stimulus monitor vsync, photodiode, camera exposures,
2-photon frames, licks, ...) on one DAQ sample clock. Layout:

* dataset ``data``: ``n_events x 2`` unsigned integers, one row per change of any line: column 0 = the
  sample counter at the change, column 1 = the state of all lines as a bit field (bit ``i`` = line ``i``).
  Counters narrower than 32 bits roll over; a decrease of the counter is a rollover of 2**32 samples.
* dataset ``meta``: a string holding a dict (JSON, or the Python literal the acquisition software
  writes) with ``line_labels`` (list, index = bit) and ``ni_daq`` = {``sample_freq`` (or
  ``counter_output_freq``) in Hz, ``counter_bits``}.

:class:`SyncDataset` reads ``data`` once (the files hold one row per edge, a few MB for an hour), and
gives rising/falling edges of a line in samples or seconds. Every problem (missing file, missing dataset,
unreadable meta, missing line labels) is one :class:`~release_platform.errors.InputError` naming the
entity, the file and the problem.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from release_platform.errors import InputError

__all__ = ["SyncDataset", "read_sync_meta"]

Units = Literal["samples", "seconds"]


def read_sync_meta(raw, *, entity: str | None, path) -> dict:
    """The ``meta`` dict from its stored string (JSON or a Python literal; never evaluated as code)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, np.ndarray):
        raw = raw.item() if raw.shape == () else raw.tolist()
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
    if isinstance(raw, dict):
        return raw
    text = str(raw)
    for parse in (json.loads, ast.literal_eval):
        try:
            meta = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(meta, dict):
            return meta
    raise InputError("sync meta is not a readable dict (JSON or Python literal)", entity=entity, path=path)


class SyncDataset:
    """The lines of one sync file. ``entity`` names the session in error messages."""

    def __init__(self, path: str | os.PathLike, *, entity: str | None = None):
        import h5py

        self.path = Path(path)
        self.entity = entity
        if not self.path.exists():
            raise InputError("sync file is missing", entity=entity, path=self.path)
        try:
            with h5py.File(self.path, "r") as f:
                for name in ("data", "meta"):
                    if name not in f:
                        raise InputError(f"sync file has no '{name}' dataset", entity=entity, path=self.path)
                data = np.asarray(f["data"][()])
                meta_raw = f["meta"][()]
        except InputError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise InputError(f"unreadable sync file: {exc}", entity=entity, path=self.path) from None
        if data.ndim != 2 or data.shape[1] < 2:
            raise InputError(f"sync 'data' has shape {data.shape}, expected events x [counter, line bits]",
                             entity=entity, path=self.path)
        self.meta = read_sync_meta(meta_raw, entity=entity, path=self.path)
        labels = self.meta.get("line_labels")
        if not isinstance(labels, (list, tuple)):
            raise InputError("sync meta has no 'line_labels' list", entity=entity, path=self.path)
        self.line_labels: list[str] = [str(x) for x in labels]
        daq = self.meta.get("ni_daq") or {}
        freq = daq.get("sample_freq", daq.get("counter_output_freq"))
        try:
            self.sample_freq = float(freq)
        except (TypeError, ValueError):
            raise InputError("sync meta lacks ni_daq.sample_freq (or counter_output_freq)", entity=entity,
                             path=self.path) from None
        if not np.isfinite(self.sample_freq) or self.sample_freq <= 0:
            raise InputError(f"sync sample frequency {freq!r} is not positive", entity=entity, path=self.path)
        self.counter_bits = int(daq.get("counter_bits", 32) or 32)
        counter = data[:, 0].astype(np.int64)
        if self.counter_bits < 32:
            # event-based sampling with a narrow counter: a decrease is a rollover of 2**32 samples
            rollovers = np.cumsum(np.r_[0, np.diff(counter) < 0])
            counter = counter + rollovers * (1 << 32)
        self.samples: np.ndarray = counter
        self.bits: np.ndarray = data[:, -1].astype(np.uint64)

    # --- lines --------------------------------------------------------------------------------------

    def has_line(self, label: str) -> bool:
        return label in self.line_labels

    def find_line(self, candidates: Sequence[str]) -> str | None:
        """The first of ``candidates`` present in the line labels (``None`` when none is)."""
        for label in candidates:
            if label in self.line_labels:
                return label
        return None

    def require_lines(self, needs: dict[str, Sequence[str]]) -> dict[str, str]:
        """For each role (e.g. ``"vsync"``) the label found among its candidate labels.

        One InputError listing every role without a label: ``missing line labels: vsync (one of
        stim_vsync, vsync_stim); ...``.
        """
        found, missing = {}, []
        for role, candidates in needs.items():
            label = self.find_line(candidates)
            if label is None:
                missing.append(f"{role} (one of {', '.join(candidates)})")
            else:
                found[role] = label
        if missing:
            raise InputError(
                f"sync file lacks the expected line labels: {'; '.join(missing)}; it has {self.line_labels}",
                entity=self.entity, path=self.path,
            )
        return found

    def line_state(self, label: str) -> np.ndarray:
        """0/1 state of the line after each event row."""
        bit = self.line_labels.index(label)
        return ((self.bits >> np.uint64(bit)) & np.uint64(1)).astype(np.int8)

    def _convert(self, samples: np.ndarray, units: Units) -> np.ndarray:
        if units == "samples":
            return samples
        if units == "seconds":
            return samples / self.sample_freq
        raise ValueError(f"units must be 'samples' or 'seconds', got {units!r}")

    def edges(self, label: str, kind: Literal["rising", "falling", "all"], units: Units = "seconds") -> np.ndarray:
        """Times of the line's rising (0 -> 1), falling (1 -> 0) or all edges, sorted.

        The state before the first event row is taken as equal to the first row (as the acquisition
        software records it), so the first row is never an edge.
        """
        if label not in self.line_labels:
            self.require_lines({label: (label,)})
        state = self.line_state(label)
        change = np.diff(state, prepend=state[:1])
        if kind == "rising":
            mask = change == 1
        elif kind == "falling":
            mask = change == -1
        elif kind == "all":
            mask = change != 0
        else:
            raise ValueError(f"kind must be 'rising', 'falling' or 'all', got {kind!r}")
        return self._convert(self.samples[mask], units)

    def rising_edges(self, label: str, units: Units = "seconds") -> np.ndarray:
        return self.edges(label, "rising", units)

    def falling_edges(self, label: str, units: Units = "seconds") -> np.ndarray:
        return self.edges(label, "falling", units)
