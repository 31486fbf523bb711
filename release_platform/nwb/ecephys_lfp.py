"""Per-probe LFP NWB files: the probe's LFP channels streamed from the raw LFP array, with their electrodes
and timestamps, through the write protocol. Split from :mod:`release_platform.nwb.ecephys`, whose helpers it uses
and which re-exports its writers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from release_platform.ecephys.probes import (
    DEFAULT_FILTERING,
    ProbeInputs,
)
from release_platform.ecephys.units import load_npy
from release_platform.errors import InputError
from release_platform.nwb.config import BackendConfiguration
from release_platform.nwb.ecephys_csd import add_current_source_density, probe_csd
from release_platform.nwb.protocol import (
    H5DatasetIterator,
    WriteResult,
    provenance_record,
    regular_rate,
    write_nwb,
)

from release_platform.nwb.ecephys import (
    EcephysNwbInputs, _add_electrodes, _add_probe_device, _backend, _new_nwbfile, _quiet_region_warnings,
    lfp_output_path, probe_entity,
)

log = logging.getLogger(__name__)


def _read_index_array(path: str, entity: str, what: str) -> np.ndarray:
    p = Path(path)
    if p.suffix == ".npy":
        return np.asarray(load_npy(p, entity=entity, mmap=False))
    raise InputError(f"{what} must be a .npy file", entity=entity, path=p)


def _lfp_parts(inputs: EcephysNwbInputs, probe: ProbeInputs, config: BackendConfiguration):
    """Open the LFP source: data iterator, timestamps (iterator/array/None), channels, conversion."""
    entity = probe_entity(inputs, probe)
    lfp = probe.lfp
    if lfp is None:
        raise InputError("the probe has no LFP input", entity=entity)
    data_path = Path(lfp.input_data_path)
    if not data_path.exists():
        raise InputError("LFP data file is missing", entity=entity, path=data_path)
    try:
        with h5py.File(data_path, "r") as fh:
            if "data" not in fh or not isinstance(fh["data"], h5py.Dataset):
                raise InputError("LFP file has no dataset 'data'", entity=entity, path=data_path)
            shape, dtype = fh["data"].shape, fh["data"].dtype
            conversion_attr = fh["data"].attrs.get("conversion")
            channels = fh["channels"][()] if (lfp.input_channels_path is None and "channels" in fh) else None
            has_ts = "timestamps" in fh
            ts_len = fh["timestamps"].shape[0] if has_ts else None
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot open LFP file (corrupt or truncated?): {exc}", entity=entity, path=data_path) from None
    if len(shape) != 2:
        raise InputError(f"LFP dataset 'data' has shape {shape}, expected samples x channels", entity=entity, path=data_path)
    if lfp.input_channels_path is not None:
        channels = _read_index_array(lfp.input_channels_path, entity, "LFP channels")
    if channels is None:
        raise InputError("no LFP channel list (dataset 'channels' or input_channels_path)", entity=entity, path=data_path)
    channels = np.asarray(channels, dtype=np.int64).reshape(-1)
    if len(channels) != shape[1]:
        raise InputError(f"LFP has {shape[1]} columns but {len(channels)} channel numbers", entity=entity, path=data_path)
    by_number = {c.probe_channel_number: c for c in probe.channels}
    unknown = sorted(set(channels.tolist()) - set(by_number))
    if unknown:
        raise InputError(f"LFP channels {unknown} are not channels of the probe", entity=entity, path=data_path)
    conversion = lfp.conversion if lfp.conversion is not None else (None if conversion_attr is None else float(conversion_attr))
    if conversion is None:
        if np.issubdtype(dtype, np.integer):
            raise InputError("LFP samples are integers but no conversion (V/bit) is given (attribute or lfp.conversion)",
                             entity=entity, path=data_path)
        conversion = 1.0

    timestamps = None
    if lfp.input_timestamps_path is not None:
        timestamps = _read_index_array(lfp.input_timestamps_path, entity, "LFP timestamps").astype(np.float64)
        if len(timestamps) != shape[0]:
            raise InputError(f"{len(timestamps)} LFP timestamps for {shape[0]} samples", entity=entity, path=lfp.input_timestamps_path)
        regular = regular_rate(timestamps)
        if regular and inputs.compat != "allensdk":  # AllenSDK reads series.timestamps: keep them explicit
            timestamps = regular
    elif has_ts:
        if ts_len != shape[0]:
            raise InputError(f"{ts_len} LFP timestamps for {shape[0]} samples", entity=entity, path=data_path)
        if shape[0]:
            try:
                with h5py.File(data_path, "r") as fh:
                    regular = regular_rate(fh["timestamps"])
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read LFP timestamps (corrupt?): {exc}", entity=entity, path=data_path) from None
            timestamps = regular if regular and inputs.compat != "allensdk" else "h5"
    data_cfg = config.for_location(f"acquisition/probe_{probe.id}_lfp/probe_{probe.id}_lfp_data/data")
    row_bytes = max(shape[1] * np.dtype(dtype).itemsize, 1)
    rows = max(1, min(int(shape[0]) or 1, int(inputs.lfp_chunk_mb * (1 << 20) // row_bytes)))
    chunk = tuple(min(c, max(s, 1)) for c, s in zip(data_cfg.chunk_shape, shape)) if data_cfg.chunk_shape else (rows, max(shape[1], 1))
    data_it = H5DatasetIterator(data_path, "data", entity=entity, chunk_shape=chunk, buffer_gb=inputs.lfp_buffer_gb)

    if isinstance(timestamps, str):
        ts_rows = max(1, min(int(shape[0]), 1 << 20))
        try:
            timestamps = H5DatasetIterator(data_path, "timestamps", entity=entity, chunk_shape=(ts_rows,), buffer_gb=inputs.lfp_buffer_gb)
        except BaseException:
            data_it.close()
            raise
    return data_it, timestamps, [by_number[int(n)] for n in channels], conversion, shape


def _add_csd(nwbfile, inputs: EcephysNwbInputs, probe: ProbeInputs, timestamps, channels, conversion,
             report: list[str] | None) -> None:
    """The probe's current source density (:mod:`release_platform.nwb.ecephys_csd`); a probe whose CSD cannot be
    computed is a documented skip: the reason is logged and appended to ``report``."""
    entity = probe_entity(inputs, probe)
    try:
        result = probe_csd(entity=entity, data_path=probe.lfp.input_data_path, timestamps=timestamps,
                           rate=probe.lfp_sampling_rate, conversion=conversion, channels=channels,
                           stimulus_table_path=inputs.stimulus_table_path, params=inputs.current_source_density)
    except InputError as exc:
        message = f"current source density skipped: {exc}"
        log.warning("%s", message)
        if report is not None:
            report.append(message)
        return
    add_current_source_density(nwbfile, result, probe_name=probe.name)


@_quiet_region_warnings
def build_lfp_nwbfile(inputs: EcephysNwbInputs, probe: ProbeInputs, *, config: BackendConfiguration | None = None,
                      report: list[str] | None = None):
    """The in-memory LFP ``NWBFile`` of one probe; the samples stay on disk until written (streamed). With
    ``inputs.current_source_density`` set, the probe's CSD is added (skips are appended to ``report``)."""
    from pynwb.ecephys import LFP, ElectricalSeries

    config = _backend(inputs, config)
    lfp = probe.lfp
    files = {"lfp_data": lfp.input_data_path if lfp else None,
             "lfp_timestamps": lfp.input_timestamps_path if lfp else None,
             "lfp_channels": lfp.input_channels_path if lfp else None}
    params = {"session_id": inputs.session_id, "probe_id": probe.id, "probe_name": probe.name,
              "lfp_sampling_rate": probe.lfp_sampling_rate, "temporal_subsampling_factor": probe.temporal_subsampling_factor,
              "conversion": lfp.conversion if lfp else None, "compression": config.tier,
              "session_metadata": inputs.session_metadata.model_dump(mode="json")}
    data_it, timestamps, channels, conversion, shape = _lfp_parts(inputs, probe, config)
    try:
        provenance = provenance_record(writer="release_platform.nwb.ecephys.write_probe_lfp_nwb", parameters=params, inputs=files)
        nwbfile = _new_nwbfile(
            inputs,
            kind="ecephys_probe_lfp",
            ids=[inputs.session_id, probe.id],
            description=f"LFP data and timestamps for probe {probe.name} (probe_id {probe.id}) of an Ecephys session",
            provenance=provenance,
            writer="release_platform.nwb.ecephys",
        )
        group = _add_probe_device(nwbfile, probe, has_lfp=True, compat=inputs.compat)
        _add_electrodes(nwbfile, [(probe, channels, group)])
        region = nwbfile.create_electrode_table_region(
            region=list(range(len(channels))), description=f"LFP channels of {probe.name}"
        )
        kwargs: dict[str, Any] = {}
        if timestamps is None and inputs.compat == "allensdk":  # explicit timestamps at the nominal rate
            kwargs["timestamps"] = np.arange(shape[0], dtype=np.float64) / float(probe.lfp_sampling_rate)
        elif timestamps is None:
            kwargs.update(starting_time=0.0, rate=float(probe.lfp_sampling_rate))
        elif isinstance(timestamps, tuple):  # regular: (starting_time, rate)
            kwargs.update(starting_time=float(timestamps[0]), rate=float(timestamps[1]))
        else:
            kwargs["timestamps"] = timestamps
        series = ElectricalSeries(
            name=f"probe_{probe.id}_lfp_data",
            description=f"Local field potential of {probe.name}, low-pass filtered and down-sampled",
            data=data_it,
            electrodes=region,
            conversion=float(conversion),
            filtering=DEFAULT_FILTERING,
            **kwargs,
        )
        nwbfile.add_acquisition(LFP(name=f"probe_{probe.id}_lfp", electrical_series=series))
        if inputs.current_source_density is not None:
            _add_csd(nwbfile, inputs, probe, timestamps, channels, conversion, report)
    except BaseException:
        data_it.close()
        if isinstance(timestamps, H5DatasetIterator):
            timestamps.close()
        raise
    return nwbfile


def write_probe_lfp_nwb(
    inputs: EcephysNwbInputs, probe: ProbeInputs, *, config: BackendConfiguration | None = None,
    report: list[str] | None = None,
) -> WriteResult:
    """Write one probe's LFP file (streaming) through the write protocol; CSD skips are appended to ``report``."""
    config = _backend(inputs, config)
    return write_nwb(
        lfp_output_path(inputs, probe),
        lambda: build_lfp_nwbfile(inputs, probe, config=config, report=report),
        entity=probe_entity(inputs, probe),
        config=config,
    )
