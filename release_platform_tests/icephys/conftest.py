"""Synthetic cells shared by the icephys tests (generated once per session: ~2 s each)."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest

from data_fixtures.icephys import IcephysDefects, IcephysParams, generate_icephys_cell, hidden_params

HIDDEN_SEEDS = (11, 12, 13)


@dataclasses.dataclass(frozen=True)
class Cell:
    params: IcephysParams
    nwb_path: object
    truth: dict


def _make(root, cell_id, params, seed, **kwargs) -> Cell:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spec = generate_icephys_cell(root, cell_specimen_id=cell_id, params=params, seed=seed, **kwargs)
    return Cell(params, spec.nwb_path, json.loads(spec.truth_path.read_text()))


@pytest.fixture(scope="session")
def icephys_root(tmp_path_factory):
    return tmp_path_factory.mktemp("icephys_cells")


@pytest.fixture(scope="session")
def hidden_cells(icephys_root) -> dict[int, Cell]:
    """Cells whose parameters are drawn from a seed; tests compare against the truth JSON only."""
    return {seed: _make(icephys_root, 7000 + seed, hidden_params(seed), seed) for seed in HIDDEN_SEEDS}


@pytest.fixture(scope="session")
def hidden_cell_sweep_table(icephys_root) -> Cell:
    """The first hidden cell again, written in the SweepTable layout."""
    seed = HIDDEN_SEEDS[0]
    return _make(icephys_root, 7000 + seed, hidden_params(seed), seed, layout="sweep_table")


@pytest.fixture(scope="session")
def demo_cell(icephys_root) -> Cell:
    """A cell with the demo's default parameters (noisier test pulses: 2 pA, 3 pulses)."""
    return _make(icephys_root, 5001, IcephysParams(), 5001)


BAD = {"truncated": 3, "voltage_clamp": 4, "unknown_name": 5, "omitted": 2}


@pytest.fixture(scope="session")
def defective_cell(icephys_root) -> Cell:
    """Demo parameters; sweep 3 truncated to half, sweep 4 recorded in voltage clamp, sweep 5 renamed to an
    unknown stimulus, and the break-in test-pulse sweep (2) left out."""
    defects = IcephysDefects(
        truncate=((BAD["truncated"], 0.5),), voltage_clamp=(BAD["voltage_clamp"],), omit=(BAD["omitted"],),
        rename=((BAD["unknown_name"], "XQNOTKNOWN000"),),
    )
    return _make(icephys_root, 5003, IcephysParams(), 5003, defects=defects, file_name="defective.nwb")
