"""Stand-ins for the assets upstream of the metadata assets, for tests on a hand-built LIMS without raw data.

* an input asset that carries the session's release rows, gathered from LIMS as the real input asset does
  (without validating raw data files the hand-built LIMS does not have);
* NWB assets that report the files listed in ``written[asset name][partition key]`` (``{entity id: path}``).
"""

from __future__ import annotations

import dagster as dg

from release_platform.assets import metadata as am
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.inputs import SessionBase
from release_platform.lims.resource import LimsResource
from release_platform.metadata import DataFiles, gather_for
from release_platform_tests.metadata import LimsWorld, day

def ophys_mouse(w: LimsWorld) -> None:
    """Mouse m1: training behavior session 1, mesoscope ophys session 101 (planes 1011 with one ROI, 1012) recorded
    with behavior session 2, in container 900."""
    w.donor("m1")
    w.behavior(1, "m1", "TRAINING_1_gratings", day(0))
    w.ophys(101, "m1", "OPHYS_1_images_A", day(1), [(1011, 175, "VISp", 0, "passed", [(1, True, 9)]), (1012, 275, "VISp", 1)],
            project="VisualBehaviorMultiscope", rig="MESO.1")
    w.behavior(2, "m1", "OPHYS_1_images_A", day(1), ophys_session_id=101)
    w.container(900, [("OphysSession", 101)])


# NWB asset -> session kind of its partitions
NWB_KINDS = {"behavior_nwb": "behavior_session", "behavior_ophys_nwb": "ophys_session",
             "ecephys_session_nwb": "ecephys_session", "ecephys_probe_lfp_nwb": "ecephys_session"}


def input_stand_in(kind: str) -> dg.AssetsDefinition:
    @dg.asset(name=f"{kind}_inputs", partitions_def=PARTITIONS_BY_KIND[kind])
    def _inputs(context, lims: LimsResource):
        rows, _ = gather_for(lims.get_client(), kind, [int(context.partition_key)])
        return SessionBase(kind=kind, session_id=int(context.partition_key), release_rows=rows)

    return _inputs


def nwb_stand_in(name: str, written: dict) -> dg.AssetsDefinition:
    kind = am.NWB_FILE_KIND[name]

    @dg.asset(name=name, partitions_def=PARTITIONS_BY_KIND[NWB_KINDS[name]])
    def _nwb(context):
        return DataFiles(kind, written.get(name, {}).get(context.partition_key, {}))

    return _nwb


def upstream_of(names, written: dict) -> list[dg.AssetsDefinition]:
    """Stand-ins for every upstream asset of the per-session metadata assets ``names``."""
    specs = [am.SESSION_ASSETS[n] for n in names if n in am.SESSION_ASSETS]
    kinds = sorted({kind for kind, *_ in specs})
    nwb = sorted({a for *_, nwb_assets in specs for a in nwb_assets})
    return [*(input_stand_in(k) for k in kinds), *(nwb_stand_in(n, written) for n in nwb)]
