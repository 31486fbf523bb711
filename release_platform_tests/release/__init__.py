"""Tests of the release package, plus :func:`world`: hand-built release tables naming real files."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from release_platform.metadata import file_id


@dataclass
class World:
    storage: Path
    frames: dict[str, pd.DataFrame]
    files: dict[int, Path]  # file id -> source file


def write_file(path: Path, size: int, seed: int = 0) -> Path:
    """A file of ``size`` deterministic pseudo-random bytes."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def world(storage: Path, *, sizes: dict[str, int] | None = None) -> World:
    """Behavior, ophys-experiment and ecephys tables (one null-file row each kind) naming files under ``storage``."""
    sizes = sizes or {}
    files: dict[int, Path] = {}

    def nwb(asset: str, partition: int, name: str, kind: str, eid: int, size: int) -> tuple[int, str]:
        fid = file_id(kind, eid)
        files[fid] = write_file(storage / asset / str(partition) / name, size, seed=eid)
        return fid, str(files[fid])

    b1 = nwb("behavior_session_nwb", 1, "behavior_session_1.nwb", "behavior_nwb", 1, sizes.get("behavior", 3000))
    behavior = pd.DataFrame({
        "behavior_session_id": pd.array([1, 2], dtype="Int64"),
        "ophys_session_id": pd.array([None, 101], dtype="Int64"),
        "mouse_id": pd.array(["m1", "m1"], dtype="string"),
        "session_type": pd.array(["TRAINING_1_gratings", "OPHYS_1_images_A"], dtype="string"),
        "file_id": pd.array([b1[0], None], dtype="Int64"),
        "file_path": pd.array([b1[1], None], dtype="string"),
    })
    e1 = nwb("behavior_ophys_nwb", 101, "behavior_ophys_experiment_1011.nwb", "behavior_ophys_nwb", 1011, sizes.get("ophys", 5000))
    e2 = nwb("behavior_ophys_nwb", 101, "behavior_ophys_experiment_1012.nwb", "behavior_ophys_nwb", 1012, sizes.get("ophys", 5000) + 7)
    experiments = pd.DataFrame({
        "ophys_experiment_id": pd.array([1011, 1012, 1013], dtype="Int64"),
        "ophys_session_id": pd.array([101, 101, 101], dtype="Int64"),
        "behavior_session_id": pd.array([2, 2, 2], dtype="Int64"),
        "mouse_id": pd.array(["m1", "m1", "m1"], dtype="string"),
        "imaging_depth": pd.array([175, 275, 375], dtype="Int64"),
        "file_id": pd.array([e1[0], e2[0], None], dtype="Int64"),
        "file_path": pd.array([e1[1], e2[1], None], dtype="string"),
    })
    s1 = nwb("ecephys_session_nwb", 301, "ecephys_session_301.nwb", "ecephys_nwb", 301, sizes.get("ecephys", 4000))
    ecephys = pd.DataFrame({
        "ecephys_session_id": pd.array([301], dtype="Int64"),
        "mouse_id": pd.array(["m 2"], dtype="string"),  # a space: the DANDI label becomes "m-2"
        "file_id": pd.array([s1[0]], dtype="Int64"),
        "file_path": pd.array([s1[1]], dtype="string"),
    })
    cells = pd.DataFrame({"cell_roi_id": pd.array([1, 2], dtype="Int64"), "ophys_experiment_id": pd.array([1011, 1011], dtype="Int64")})
    frames = {"behavior_session_table": behavior, "ophys_experiment_table": experiments, "ecephys_session_table": ecephys,
              "ophys_cells_table": cells}
    return World(storage, frames, files)


def flip_byte(path: Path, offset: int = 10) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ 0xFF]))


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root``: relative path -> content."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out
