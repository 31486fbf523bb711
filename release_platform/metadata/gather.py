"""Gather the LIMS rows a metadata build needs, through :mod:`release_platform.lims.metadata_queries`.

No SQL here: this module decides *which* rows to ask for (the universe of the target sessions' mice) and
reads the one file-derived fact the tables need.

Omitted flashes of habituation sessions
---------------------------------------
AllenSDK asked mtrain whether a habituation session's stage had ``flash_omit_probability > 0``. We have no
mtrain, so the source is the session's **stimulus presentations**: the behavior session's well-known file
``StimulusPresentations`` (CSV). A habituation session had omissions when that table has an ``omitted``
column with at least one true value. When the file is not registered, unreadable, or has no ``omitted``
column, the session counts as having had no omissions and a :class:`MetadataWarning` names it. Only
habituation sessions are read (other types follow the session-type rule, see
:func:`release_platform.metadata.derivations.has_omissions`).
"""

from __future__ import annotations

import os
import warnings
from typing import Iterable, Optional

import pandas as pd

from release_platform.lims import metadata_queries as q
from release_platform.lims.client import LimsClient
from release_platform.metadata import derivations as d
from release_platform.metadata.builders import LimsRows, Targets
from release_platform.metadata.files import MetadataWarning

_TRUE = {"true", "1", "t", "yes", "y", "1.0"}


def read_flash_omissions(path: Optional[str | os.PathLike]) -> Optional[bool]:
    """True/False from a stimulus presentations CSV's ``omitted`` column; None when unknown."""
    if path is None or not os.path.isfile(path):
        return None
    try:
        frame = pd.read_csv(path, usecols=lambda c: c == "omitted")
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if "omitted" not in frame.columns:
        return None
    col = frame["omitted"]
    if col.dtype == bool:
        return bool(col.any())
    return bool(col.dropna().astype(str).str.strip().str.lower().isin(_TRUE).any())


def flash_omissions(client: LimsClient, behavior: pd.DataFrame) -> pd.Series:
    """Nullable-boolean ``flash_omissions`` for the habituation rows of ``behavior`` (others: NA)."""
    out = pd.Series(pd.NA, index=behavior.index, dtype="boolean")
    habit = d.is_habituation(behavior["session_type"].astype("string"))
    if not habit.any():
        return out
    ids = behavior.loc[habit, "behavior_session_id"].astype("int64")
    files = q.well_known_files_of(client, "BehaviorSession", ids.tolist(), q.STIMULUS_PRESENTATIONS)
    paths = dict(zip(files["attachable_id"].astype("int64"), files["path"]))
    unknown = []
    for idx, sid in ids.items():
        value = read_flash_omissions(paths.get(int(sid)))
        if value is None:
            unknown.append(int(sid))
        else:
            out.loc[idx] = value
    if unknown:
        warnings.warn(
            f"habituation behavior sessions without a readable 'omitted' column in their StimulusPresentations "
            f"file count as having no omissions: {sorted(unknown)[:20]}",
            MetadataWarning,
            stacklevel=2,
        )
    return out


def gather(
    client: LimsClient,
    *,
    behavior_session_ids: Iterable[int] = (),
    ophys_session_ids: Iterable[int] = (),
    ecephys_session_ids: Iterable[int] = (),
    read_omissions: bool = True,
) -> LimsRows:
    """The LIMS rows for building the given sessions' rows: their mice's whole history (every behavior,
    ophys and ecephys session of the donors), the ophys planes, containers, cells and ecephys probes,
    channels and units of the targets."""
    b_ids = sorted({int(i) for i in behavior_session_ids})
    o_ids = sorted({int(i) for i in ophys_session_ids})
    e_ids = sorted({int(i) for i in ecephys_session_ids})

    # Donors of the targets (and of whatever is linked to them).
    seed_b = q.behavior_sessions(client, ids=b_ids, ophys_session_ids=o_ids, ecephys_session_ids=e_ids)
    seed_o = q.ophys_sessions(client, ids=o_ids + seed_b["ophys_session_id"].dropna().astype("int64").tolist())
    seed_e = q.ecephys_sessions(client, ids=e_ids + seed_b["ecephys_session_id"].dropna().astype("int64").tolist())
    donor_ids = set(seed_b["donor_id"].dropna().astype("int64")) | set(seed_o["donor_id"].dropna().astype("int64")) | set(
        seed_e["donor_id"].dropna().astype("int64"))

    behavior = _union(q.behavior_sessions(client, donor_ids=donor_ids), seed_b, "behavior_session_id")
    ophys = _union(q.ophys_sessions(client, donor_ids=donor_ids), seed_o, "ophys_session_id")
    ecephys = _union(q.ecephys_sessions(client, donor_ids=donor_ids), seed_e, "ecephys_session_id")
    # Sessions linked across donors (a LIMS inconsistency the builder warns about) are still fetched.
    ophys = _union(ophys, q.ophys_sessions(client, ids=set(behavior["ophys_session_id"].dropna().astype("int64")) - set(ophys["ophys_session_id"])), "ophys_session_id")
    ecephys = _union(ecephys, q.ecephys_sessions(client, ids=set(behavior["ecephys_session_id"].dropna().astype("int64")) - set(ecephys["ecephys_session_id"])), "ecephys_session_id")
    donor_ids |= set(ophys["donor_id"].dropna().astype("int64")) | set(ecephys["donor_id"].dropna().astype("int64"))

    experiments = q.ophys_experiments(client, ophys_session_ids=ophys["ophys_session_id"].tolist())
    memberships = q.container_memberships(
        client,
        members={
            "OphysExperiment": experiments["ophys_experiment_id"].tolist(),
            "OphysSession": ophys["ophys_session_id"].tolist(),
            "BehaviorSession": behavior["behavior_session_id"].tolist(),
        },
    )
    container_ids = memberships["ophys_container_id"].dropna().astype("int64").unique().tolist()
    container_depths = _container_depths(client, container_ids)

    target_experiments = experiments[experiments["ophys_session_id"].isin(o_ids)]["ophys_experiment_id"].tolist()
    probes = q.ecephys_probes(client, e_ids)
    lfp = q.well_known_files_of(client, "EcephysProbe", probes["ecephys_probe_id"].tolist(), q.ECEPHYS_LFP)
    probes["has_lfp_data"] = probes["ecephys_probe_id"].isin(lfp["attachable_id"].astype("int64").tolist())
    channels = q.ecephys_channels(client, probes["ecephys_probe_id"].tolist())
    units = q.ecephys_units(client, channels["ecephys_channel_id"].tolist())

    if read_omissions:
        behavior["flash_omissions"] = flash_omissions(client, behavior)
    return LimsRows(
        donors=q.donors(client, donor_ids),
        genotypes=q.donor_genotypes(client, donor_ids),
        behavior_sessions=behavior,
        ophys_sessions=ophys,
        ophys_experiments=experiments,
        memberships=memberships,
        container_depths=container_depths,
        cell_rois=q.valid_cell_rois(client, target_experiments),
        ecephys_sessions=ecephys,
        probes=probes,
        channels=channels,
        units=units,
    )


def gather_for(client: LimsClient, kind: str, session_ids: Iterable[int], **kw) -> tuple[LimsRows, Targets]:
    """:func:`gather` for sessions of one kind (``behavior_session``, ``ophys_session``, ``ecephys_session``)
    with the matching :class:`Targets`."""
    ids = [int(i) for i in session_ids]
    rows = gather(client, **{f"{kind}_ids": ids}, **kw)
    return rows, Targets.only(kind, ids)


def _union(a: pd.DataFrame, b: pd.DataFrame, key: str) -> pd.DataFrame:
    if b is None or b.empty:
        return a.reset_index(drop=True)
    if a.empty:
        return b.reset_index(drop=True)
    b = b[~b[key].isin(a[key].tolist())]
    if b.empty:
        return a.reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # all-NA columns in one part: dtype resolution note
        out = pd.concat([a, b], ignore_index=True)
    return out.sort_values(key, kind="stable").reset_index(drop=True)


def _container_depths(client: LimsClient, container_ids: list[int]) -> pd.DataFrame:
    columns = ["ophys_container_id", "ophys_experiment_id", "imaging_depth", "workflow_state"]
    if not container_ids:
        return pd.DataFrame(columns=columns)
    mem = q.container_memberships(client, container_ids=container_ids)
    direct = mem[mem["attachable_type"] == "OphysExperiment"][["ophys_container_id", "attachable_id"]].rename(
        columns={"attachable_id": "ophys_experiment_id"})
    sess = mem[mem["attachable_type"] == "OphysSession"][["ophys_container_id", "attachable_id"]].rename(
        columns={"attachable_id": "ophys_session_id"})
    exps_direct = q.ophys_experiments(client, ids=direct["ophys_experiment_id"].tolist())
    exps_sess = q.ophys_experiments(client, ophys_session_ids=sess["ophys_session_id"].tolist())
    a = direct.merge(exps_direct, on="ophys_experiment_id")
    b = sess.merge(exps_sess, on="ophys_session_id")
    out = pd.concat([a[columns], b[columns]], ignore_index=True).drop_duplicates(subset=["ophys_container_id", "ophys_experiment_id"])
    return out.reset_index(drop=True)
