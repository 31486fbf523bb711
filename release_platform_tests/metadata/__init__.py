"""Tests of the release metadata tables, plus :class:`LimsWorld`, a terse way to hand-build LIMS rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from data_fixtures.seed import Donor, register_donor
from release_platform.lims import LimsClient

DAY = dt.datetime(2026, 9, 1, 9, 30)
DOB = dt.datetime(2026, 3, 1)
SLC = ("Slc17a7-IRES2-Cre", "Camk2a-tTA")
GCAMP6F = ("Ai93(TITL-GCaMP6f)",)


def day(n: int) -> dt.datetime:
    return DAY + dt.timedelta(days=n)


class LimsWorld:
    """Insert donors, sessions, planes, ROIs, containers, probes and files with explicit ids."""

    def __init__(self, client: LimsClient):
        self.client = client
        self.donors: dict[str, tuple[int, int]] = {}

    def donor(self, name: str, *, sex: str = "F", dob: dt.datetime = DOB, driver: Sequence[str] = SLC,
              reporter: Sequence[str] = GCAMP6F) -> str:
        self.donors[name] = register_donor(self.client, Donor(name, sex, dob, tuple(driver), tuple(reporter)))
        return name

    def _ref(self, table: str, column: str, value: Optional[str]) -> Optional[int]:
        return None if value is None else self.client.lookup_id(table, column, value)

    def behavior(self, sid: int, mouse: str, session_type: str, when: dt.datetime, *, ophys_session_id: int | None = None,
                 ecephys_session_id: int | None = None, project: str = "VisualBehavior", rig: str = "BEH.D-Box1",
                 stimulus_presentations: str | Path | None = None) -> int:
        self.client.insert("behavior_sessions", [{
            "id": sid, "stimulus_name": session_type, "date_of_acquisition": when, "donor_id": self.donors[mouse][0],
            "equipment_id": self._ref("equipment", "name", rig), "project_id": self._ref("projects", "code", project),
            "ophys_session_id": ophys_session_id, "ecephys_session_id": ecephys_session_id,
        }])
        if stimulus_presentations is not None:
            self.client.register_file("BehaviorSession", sid, "StimulusPresentations", stimulus_presentations)
        return sid

    def ophys(self, sid: int, mouse: str, session_type: str, when: dt.datetime,
              planes: Iterable[tuple], *, project: str = "VisualBehavior", rig: str = "CAM2P.4") -> int:
        """``planes``: (experiment id, depth µm, structure, plane group or None[, workflow state[, rois]]) where
        rois is a list of (roi id, valid, cell_specimen_id)."""
        self.client.insert("ophys_sessions", [{
            "id": sid, "name": f"{sid}_{session_type}", "stimulus_name": session_type, "date_of_acquisition": when,
            "specimen_id": self.donors[mouse][1], "project_id": self._ref("projects", "code", project),
            "equipment_id": self._ref("equipment", "name", rig),
        }])
        groups: dict[int, int] = {}
        for plane in planes:
            eid, depth, structure, group = plane[:4]
            state = plane[4] if len(plane) > 4 else "uploaded"
            rois = plane[5] if len(plane) > 5 else []
            gid = None
            if group is not None:
                if group not in groups:
                    groups[group] = self.client.insert("ophys_imaging_plane_groups", [{"ophys_session_id": sid, "group_order": group}])[0]
                gid = groups[group]
            self.client.insert("ophys_experiments", [{
                "id": eid, "ophys_session_id": sid, "workflow_state": state,
                "imaging_depth_id": self._ref("imaging_depths", "depth", depth) if depth is not None else None,
                "targeted_structure_id": self._ref("structures", "acronym", structure),
                "ophys_imaging_plane_group_id": gid,
            }])
            if rois:
                self.client.add_rois(eid, [
                    {"id": rid, "x": 0, "y": 0, "width": 2, "height": 2, "mask": np.ones((2, 2), bool), "valid": valid,
                     "cell_specimen_id": csid, "exclusion_labels": [] if valid else ["motion_border"]}
                    for rid, valid, csid in rois
                ])
        return sid

    def container(self, cid: int, members: Sequence[tuple[str, int]], project: str = "VisualBehavior") -> int:
        self.client.insert("experiment_containers", [{"id": cid, "name": f"container {cid}",
                                                      "project_id": self._ref("projects", "code", project)}])
        self.client.add_to_container(cid, members)
        return cid

    def ecephys(self, sid: int, mouse: str, session_type: str, when: dt.datetime, probes: Sequence[dict], *,
                project: str = "VisualBehaviorNeuropixels", rig: str = "NP.1") -> int:
        """``probes``: dicts with id, name, channels [(id, local_index, structure or None, valid)],
        units [(id, channel id, metrics dict)], optional lfp (path)."""
        self.client.insert("ecephys_sessions", [{
            "id": sid, "name": f"{sid}_{session_type}", "stimulus_name": session_type, "date_of_acquisition": when,
            "specimen_id": self.donors[mouse][1], "project_id": self._ref("projects", "code", project),
            "equipment_id": self._ref("equipment", "name", rig),
        }])
        for p in probes:
            self.client.insert("ecephys_probes", [{"id": p["id"], "ecephys_session_id": sid, "name": p["name"],
                                                   "sampling_rate_hz": 30000.0, "lfp_sampling_rate_hz": 2500.0, "phase": "1.0"}])
            self.client.insert("ecephys_channels", [{
                "id": cid, "ecephys_probe_id": p["id"], "local_index": li, "probe_vertical_position": 20.0 * li,
                "probe_horizontal_position": 11.0 if li % 2 else 43.0, "structure_id": self._ref("structures", "acronym", st),
                "valid_data": valid, "anterior_posterior_ccf_coordinate": 8000.0 if st else None,
            } for cid, li, st, valid in p["channels"]])
            self.client.insert("ecephys_units", [{
                "id": uid, "ecephys_channel_id": ch, "cluster_id": i, "local_index": i, "quality": "good", "metrics": metrics,
            } for i, (uid, ch, metrics) in enumerate(p["units"])])
            if p.get("lfp"):
                self.client.register_file("EcephysProbe", p["id"], "EcephysLfp", p["lfp"])
        return sid

    def publish(self, attachable_type: str, attachable_id: int, type_name: str, path: str | Path, when: dt.datetime) -> None:
        self.client.register_file(attachable_type, attachable_id, type_name, path)
        from release_platform.lims import schema
        import sqlalchemy as sa

        w, t = schema.well_known_files, schema.well_known_file_types
        type_id = sa.select(t.c.id).where(t.c.name == type_name).scalar_subquery()
        self.client._run(lambda conn: conn.execute(
            sa.update(w)
            .where(w.c.attachable_type == attachable_type, w.c.attachable_id == attachable_id, w.c.well_known_file_type_id == type_id)
            .values(published_at=when)
        ), write=True)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"nwb")
    return path
