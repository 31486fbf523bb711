"""Read patch-clamp sweeps from NWB 2 icephys files, in both layouts found in the wild.

* icephys tables: ``/general/intracellular_ephys/intracellular_recordings`` pairs each stimulus with its
  response (``TimeSeriesReferenceVectorData``: start index, count and the series);
* ``SweepTable`` (MIES-produced files, Allen's ``ipfx``): ``/general/intracellular_ephys/sweep_table``
  lists the series of each sweep number; the stimulus is the ``*StimulusSeries`` among them;
* neither table: stimulus and response series are paired by their ``sweep_number`` attribute.

Reading goes straight through h5py (no object mapping): the metadata of every sweep first, then all samples
into one float64 buffer per cell (the sweeps' arrays are views of it), scaled in place by each dataset's
``conversion``/``offset`` and returned in mV and pA: current clamp stimulus pA / response mV, voltage clamp
stimulus mV / response pA. Stimulus types come from a configurable map of raw stimulus names (prefix
match, longest prefix wins), not from a naming convention.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import h5py
import numpy as np

from release_platform.errors import InputError

__all__ = [
    "DEFAULT_STIMULUS_NAMES",
    "Sweep",
    "CellRecording",
    "read_cell",
    "stimulus_type_for",
]

#: Stimulus type -> raw stimulus names or prefixes (AllenSDK's ``ephys_raw_stimulus_names`` shape).
DEFAULT_STIMULUS_NAMES: dict[str, list[str]] = {
    "Long Square": ["C1LSCOARSE", "C1LSFINEST", "C1LSFINE"],
    "Short Square": ["C1SSCOARSE", "C1SSFINEST", "C1SSTRIPLE"],
    "Ramp": ["C1RP25PR1S", "C1RP"],
    "Noise": ["C1NSSEED"],
    "Square - 2s Suprathreshold": ["C2SQRHELNG"],
    "Test": ["EXTPINBATH", "EXTPCllATT", "EXTPBREAKN", "EXTPBLWOUT", "EXTPSAFETY", "EXTPEXPEND", "EXTPGGAEND"],
}

_VOLTS = {"volts": 1e3, "volt": 1e3, "v": 1e3, "mv": 1.0, "millivolts": 1.0}
_AMPERES = {"amperes": 1e12, "ampere": 1e12, "a": 1e12, "pa": 1.0, "picoamperes": 1.0}


@dataclasses.dataclass
class Sweep:
    """One sweep: stimulus and response on the same sample grid (mV / pA as the clamp mode says)."""

    sweep_number: int
    stimulus_name: str
    clamp_mode: str  # "current", "voltage" or "izero"
    rate_hz: float
    starting_time_s: float
    stimulus: np.ndarray  # pA (current clamp) or mV (voltage clamp)
    response: np.ndarray  # mV (current clamp) or pA (voltage clamp); may be shorter than stimulus (truncated)
    stimulus_type: Optional[str] = None
    gain: Optional[float] = None
    bridge_balance_mohm: Optional[float] = None
    leak_pa: Optional[float] = None

    @property
    def stimulus_units(self) -> str:
        return "mV" if self.clamp_mode == "voltage" else "pA"


@dataclasses.dataclass
class CellRecording:
    path: str
    layout: str  # "icephys_tables", "sweep_table" or "series_attributes"
    identifier: str
    session_start_time: Optional[str]
    sweeps: list[Sweep]

    def by_number(self) -> dict[int, Sweep]:
        return {s.sweep_number: s for s in self.sweeps}


def stimulus_type_for(name: str, names: Mapping[str, Sequence[str]]) -> Optional[str]:
    """The stimulus type whose raw name or prefix matches ``name`` (longest prefix wins), else None."""
    best, best_len = None, -1
    for stim_type, prefixes in names.items():
        for prefix in prefixes:
            if name.startswith(prefix) and len(prefix) > best_len:
                best, best_len = stim_type, len(prefix)
    return best


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return _text(value.reshape(-1)[0]) if value.size else ""
    return str(value)


def _scalar(group: h5py.Group, name: str) -> Optional[float]:
    dataset = group.get(name)
    if dataset is None:
        return None
    value = float(np.asarray(dataset[()]).reshape(-1)[0])
    return value if np.isfinite(value) else None


def _clamp_mode(neurodata_type: str) -> Optional[str]:
    if neurodata_type.startswith("VoltageClamp"):
        return "voltage"
    if neurodata_type.startswith("IZeroClamp"):
        return "izero"
    if neurodata_type.startswith("CurrentClamp"):
        return "current"
    return None


@dataclasses.dataclass
class _Source:
    """Where a series' samples are and how to scale them (read later, into one buffer for the cell)."""

    data: h5py.Dataset
    start: int
    stop: int
    conversion: float
    offset: float
    scale: float


def _source(series: h5py.Group, start: int = 0, count: Optional[int] = None, *, path: str) -> _Source:
    data = series["data"]
    attrs = data.attrs
    unit = _text(attrs.get("unit", "")).strip().lower()
    scale = _VOLTS.get(unit, _AMPERES.get(unit))
    if scale is None:
        raise InputError(f"series {series.name}: unit {unit!r} is neither volts nor amperes", path=path)
    n = data.shape[0]
    start, stop, _ = slice(start, n if count is None or count < 0 else start + count).indices(n)
    return _Source(data, start, max(stop, start), float(attrs.get("conversion", 1.0)), float(attrs.get("offset", 0.0)), scale)


def _load(entries: list[tuple[Sweep, _Source, _Source]]) -> list[Sweep]:
    """Read every sweep's stimulus and response into one float64 buffer (one allocation per cell instead
    of two per sweep), converted from the stored dtype and scaled in place; the sweeps hold views of it."""
    total = sum(src.stop - src.start for _, stim, resp in entries for src in (stim, resp))
    buffer = np.empty(total, dtype=np.float64)
    at = 0
    for sweep, stim, resp in entries:
        arrays = []
        for src in (stim, resp):
            values = buffer[at : at + src.stop - src.start]
            at += len(values)
            if len(values):
                values[...] = src.data[src.start : src.stop]
            if src.conversion != 1.0:
                values *= src.conversion
            if src.offset != 0.0:
                values += src.offset
            values *= src.scale
            arrays.append(values)
        sweep.stimulus, sweep.response = arrays
    return [sweep for sweep, _, _ in entries]


def _rate_and_start(series: h5py.Group, *, path: str) -> tuple[float, float]:
    if "starting_time" in series:
        st = series["starting_time"]
        rate = float(st.attrs.get("rate", np.nan))
        return rate, float(st[()])
    if "timestamps" in series and series["timestamps"].shape[0] > 1:
        ts = series["timestamps"][:2]
        return float(1.0 / (ts[1] - ts[0])), float(ts[0])
    raise InputError(f"series {series.name}: no starting_time/rate and no timestamps", path=path)


def _make_sweep(number: int, stim: h5py.Group, resp: h5py.Group, windows, *, path: str) -> tuple[Sweep, _Source, _Source]:
    resp_type = _text(resp.attrs.get("neurodata_type", ""))
    clamp = _clamp_mode(resp_type)
    if clamp is None:
        raise InputError(f"sweep {number}: response {resp.name} is a {resp_type or 'untyped series'}, not a patch-clamp series",
                         path=path)
    rate, t0 = _rate_and_start(resp, path=path)
    if not (np.isfinite(rate) and rate > 0):
        raise InputError(f"sweep {number}: response {resp.name} has no valid sampling rate", path=path)
    (s_start, s_count), (r_start, r_count) = windows
    stimulus = _source(stim, s_start, s_count, path=path)
    response = _source(resp, r_start, r_count, path=path)
    name = _text(resp.attrs.get("stimulus_description", stim.attrs.get("stimulus_description", "")))
    if not name or name == "N/A":
        name = _text(stim.attrs.get("stimulus_description", ""))
    bridge = _scalar(resp, "bridge_balance")
    leak = _scalar(resp, "bias_current")
    sweep = Sweep(
        sweep_number=int(number),
        stimulus_name=name,
        clamp_mode=clamp,
        rate_hz=rate,
        starting_time_s=t0,
        stimulus=np.empty(0),
        response=np.empty(0),
        gain=_scalar(resp, "gain"),
        bridge_balance_mohm=None if bridge is None else bridge * 1e-6,
        leak_pa=None if leak is None else leak * 1e12,
    )
    return sweep, stimulus, response


def _sweep_number(series: h5py.Group, default: int) -> int:
    value = series.attrs.get("sweep_number")
    return default if value is None else int(np.asarray(value).reshape(-1)[0])


def _from_icephys_tables(fh: h5py.File, table: h5py.Group, *, path: str) -> list[tuple[Sweep, _Source, _Source]]:
    stim_col = table["stimuli/stimulus"][()]
    resp_col = table["responses/response"][()]
    ids = table["id"][()]
    sweeps = []
    for row, (stim_ref, resp_ref) in enumerate(zip(stim_col, resp_col)):
        stim, resp = fh[stim_ref["timeseries"]], fh[resp_ref["timeseries"]]
        number = _sweep_number(resp, int(ids[row]))
        windows = ((int(stim_ref["idx_start"]), int(stim_ref["count"])), (int(resp_ref["idx_start"]), int(resp_ref["count"])))
        sweeps.append(_make_sweep(number, stim, resp, windows, path=path))
    return sweeps


def _from_sweep_table(fh: h5py.File, table: h5py.Group, *, path: str) -> list[tuple[Sweep, _Source, _Source]]:
    numbers = table["sweep_number"][()]
    series = table["series"][()]
    index = table["series_index"][()] if "series_index" in table else np.arange(1, len(series) + 1)
    groups: dict[int, list[h5py.Group]] = {}
    start = 0
    for row, stop in enumerate(index):
        for ref in series[start:int(stop)]:
            groups.setdefault(int(numbers[row]), []).append(fh[ref])
        start = int(stop)
    return _pair(groups, path=path)


def _from_attributes(fh: h5py.File, *, path: str) -> list[tuple[Sweep, _Source, _Source]]:
    groups: dict[int, list[h5py.Group]] = {}
    for where in ("acquisition", "stimulus/presentation"):
        if where not in fh:
            continue
        for i, name in enumerate(sorted(fh[where])):
            obj = fh[where][name]
            if isinstance(obj, h5py.Group) and "sweep_number" in obj.attrs:
                groups.setdefault(_sweep_number(obj, i), []).append(obj)
    return _pair(groups, path=path)


def _pair(groups: dict[int, list[h5py.Group]], *, path: str) -> list[tuple[Sweep, _Source, _Source]]:
    sweeps = []
    for number in sorted(groups):
        stim = [g for g in groups[number] if _text(g.attrs.get("neurodata_type", "")).endswith("StimulusSeries")]
        resp = [g for g in groups[number] if _clamp_mode(_text(g.attrs.get("neurodata_type", ""))) and g not in stim]
        if len(stim) != 1 or len(resp) != 1:
            raise InputError(f"sweep {number}: expected one stimulus and one response series, found {len(stim)} and {len(resp)}",
                             path=path)
        sweeps.append(_make_sweep(number, stim[0], resp[0], ((0, -1), (0, -1)), path=path))
    return sweeps


def read_cell(
    path: str | os.PathLike,
    stimulus_names: Optional[Mapping[str, Sequence[str]]] = None,
) -> CellRecording:
    """Every sweep of an icephys NWB file, sorted by sweep number, with its stimulus type looked up.

    Raises :class:`InputError` naming the file for a missing, corrupt or non-icephys file.
    """
    path = os.fspath(path)
    names = DEFAULT_STIMULUS_NAMES if stimulus_names is None else stimulus_names
    if not Path(path).is_file():
        raise InputError("icephys NWB file not found", path=path)
    try:
        with h5py.File(path, "r") as fh:
            if "nwb_version" not in fh.attrs:
                raise InputError("not an NWB 2 file (no nwb_version attribute)", path=path)
            ice = fh.get("general/intracellular_ephys")
            if ice is not None and "intracellular_recordings" in ice:
                layout, sweeps = "icephys_tables", _from_icephys_tables(fh, ice["intracellular_recordings"], path=path)
            elif ice is not None and "sweep_table" in ice:
                layout, sweeps = "sweep_table", _from_sweep_table(fh, ice["sweep_table"], path=path)
            else:
                layout, sweeps = "series_attributes", _from_attributes(fh, path=path)
            sweeps = _load(sweeps)
            identifier = _text(fh["identifier"][()]) if "identifier" in fh else ""
            start = _text(fh["session_start_time"][()]) if "session_start_time" in fh else None
    except InputError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise InputError(f"cannot read icephys NWB file (corrupt or truncated?): {exc}", path=path) from None
    if not sweeps:
        raise InputError("NWB file has no patch-clamp sweeps", path=path)
    numbers = [s.sweep_number for s in sweeps]
    if len(set(numbers)) != len(numbers):
        raise InputError("sweep numbers are not unique", path=path)
    for sweep in sweeps:
        sweep.stimulus_type = stimulus_type_for(sweep.stimulus_name, names)
    sweeps.sort(key=lambda s: s.sweep_number)
    return CellRecording(path=path, layout=layout, identifier=identifier, session_start_time=start, sweeps=sweeps)


def session_start(recording: CellRecording) -> Optional[dt.datetime]:
    if not recording.session_start_time:
        return None
    try:
        return dt.datetime.fromisoformat(recording.session_start_time)
    except ValueError:
        return None
