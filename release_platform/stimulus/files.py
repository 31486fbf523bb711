"""One imaging plane's stimulus analysis from files: what the ``observatory_analysis`` module and the
``stimulus_responses`` asset both run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from release_platform.errors import InputError
from release_platform.ophys.io import read_traces
from release_platform.stimulus.lsn import DEFAULT_SHUFFLES
from release_platform.stimulus.session import analyze_session, write_analysis
from release_platform.stimulus.table import read_stimulus_table
from release_platform.storage import atomic_path


def _read_speed(path: Path, n_frames: int) -> np.ndarray:
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError("running speed file not found", path=path) from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"running speed file is unreadable: {exc}", path=path) from None
    if "speed" not in table.columns:
        raise InputError(f"running speed file lacks column 'speed' (has {list(table.columns)})", path=path)
    speed = pd.to_numeric(table["speed"], errors="coerce").to_numpy(dtype=float)
    if len(speed) != n_frames:
        raise InputError(f"running speed has {len(speed)} values but the traces have {n_frames} frames", path=path)
    return speed


def _read_template(path: Path) -> np.ndarray:
    try:
        tpl = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError("sparse-noise template not found", path=path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"sparse-noise template is unreadable: {exc}", path=path) from None
    if tpl.ndim != 3:
        raise InputError(f"sparse-noise template has shape {tpl.shape}, expected frames x rows x cols", path=path)
    return tpl


def metrics_path(output_file: Path) -> Path:
    return output_file.with_name(f"{output_file.stem}_metrics.parquet")


def analyze_plane_files(
    corrected_fluorescence_file: Path,
    dff_file: Path,
    stimulus_table_file: Path,
    frame_rate_hz: float,
    output_file: Path,
    *,
    running_speed_file: Optional[Path] = None,
    lsn_template_file: Optional[Path] = None,
    stimuli: Optional[list[str]] = None,
    n_shuffles: int = DEFAULT_SHUFFLES,
    seed: int = 0,
) -> dict:
    """Analyse one imaging plane from its files (corrected fluorescence ``FC``, dF/F ``data``, the stimulus table
    CSV, optional running speed CSV and sparse-noise template) and write ``output_file`` (HDF5 arrays) and
    :func:`metrics_path` (Parquet, one row per ROI). Returns the paths, the stimuli analysed, the mean running
    speed and the analysis messages. Bad input raises one :class:`InputError` naming the file."""
    fc = read_traces(corrected_fluorescence_file, dataset="FC")
    dff = read_traces(dff_file, dataset="data")
    if fc.roi_ids != dff.roi_ids:
        raise InputError(f"ROI ids differ from those of {corrected_fluorescence_file} (same ROIs in the same order needed)",
                         path=dff_file)
    if fc.traces.shape != dff.traces.shape:
        raise InputError(f"dF/F has shape {dff.traces.shape} but corrected fluorescence {fc.traces.shape}", path=dff_file)
    table = read_stimulus_table(stimulus_table_file)
    speed = None if running_speed_file is None else _read_speed(Path(running_speed_file), fc.traces.shape[1])
    template = None if lsn_template_file is None else _read_template(Path(lsn_template_file))
    try:
        analysis = analyze_session(
            fc.traces, dff.traces, fc.roi_ids, table, frame_rate_hz, speed=speed, lsn_template=template,
            stimuli=stimuli, n_shuffles=n_shuffles, seed=seed,
        )
    except InputError as exc:
        if exc.path is None:
            raise InputError(exc.problem, entity=exc.entity, path=stimulus_table_file) from None
        raise
    output_file = Path(output_file)
    write_analysis(output_file, analysis, table)
    target = metrics_path(output_file)
    with atomic_path(target) as tmp:
        analysis.metrics.to_parquet(tmp, index=False)
        check = pd.read_parquet(tmp)
        if len(check) != len(analysis.metrics):
            raise OSError(f"metrics file {tmp} holds {len(check)} rows, expected {len(analysis.metrics)}")
    return {
        "output_file": output_file,
        "metrics_file": target,
        "mean_running_speed": analysis.mean_running_speed,
        "stimuli": list(analysis.results),
        "n_rois": len(analysis.metrics),
        "messages": analysis.messages,
    }
