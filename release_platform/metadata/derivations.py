"""Derived metadata columns: pure, vectorized functions over pandas Series and DataFrames.

Each rule follows the AllenSDK Visual Behavior project tables (reference §7.3) unless its docstring says
otherwise. None of these functions touches LIMS, files or Dagster; they take and return pandas objects, so
10,000 sessions derive in milliseconds.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np
import pandas as pd

# --- genotype ------------------------------------------------------------------------------------------------

_INDICATOR = re.compile(r"\b(?:j?GCaMP|GC)(\d+[a-z]*)|\b(?:j?RCaMP|RC)(\d+[a-z]*)")


def parse_cre_line(full_genotype: pd.Series) -> pd.Series:
    """The first ';'-separated part of the genotype that names a Cre driver, without its '/wt' allele.

    ``Slc17a7-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt`` -> ``Slc17a7-IRES2-Cre``; no Cre part
    (e.g. ``wt/wt``) -> null. (AllenSDK took the first part whatever it was; we require it to be a Cre line.)
    """
    s = full_genotype.astype("string")
    parts = s.str.split(";")
    cre = parts.map(lambda ps: next((p.split("/")[0] for p in ps if "Cre" in p), None) if isinstance(ps, list) else None)
    return cre.astype("string")


def normalize_reporter_line(reporter_lines: pd.Series) -> pd.Series:
    """LIMS reporter genotypes (a list per donor) as one string: the single name, ';'-joined sorted names when a
    donor has several, null when none."""
    def one(value):
        if value is None or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):
            return None
        if isinstance(value, str):
            return value or None
        names = sorted({str(v) for v in value if v})
        return ";".join(names) if names else None

    return reporter_lines.map(one).astype("string")


def parse_indicator(reporter_line: pd.Series) -> pd.Series:
    """The calcium indicator named in the reporter line: ``Ai93(TITL-GCaMP6f)`` -> ``GCaMP6f``, the short
    form ``Ai148(TIT2L-GC6f-ICL-tTA2)`` -> ``GCaMP6f``, RCaMP likewise; no indicator (e.g. an opsin) -> null."""
    def one(value):
        if value is None or pd.isna(value):
            return None
        m = _INDICATOR.search(str(value))
        if m is None:
            return None
        return f"GCaMP{m.group(1)}" if m.group(1) else f"RCaMP{m.group(2)}"

    return reporter_line.map(one).astype("string")


# --- session type -----------------------------------------------------------------------------------------------

_SESSION_NUMBER = re.compile(r"^(?:OPHYS|EPHYS)_(\d+)")
_IMAGE_SET = re.compile(r"images_([A-Z]+)")


def session_number(session_type: pd.Series) -> pd.Series:
    """The integer after ``OPHYS_`` (or ``EPHYS_``) at the start of the session type; otherwise null (Int64)."""
    num = session_type.astype("string").str.extract(_SESSION_NUMBER, expand=False)
    return pd.to_numeric(num, errors="coerce").astype("Int64")


def image_set(session_type: pd.Series) -> pd.Series:
    """The stimulus set named in the session type, with ONE meaning in every table: ``images_<X>`` (e.g.
    ``images_A``) when the type names an image set, ``gratings`` for grating sessions, else null.

    AllenSDK's experiment table re-derived this as the 16th character of the session type (``A`` or ``N/A``);
    we use the session tables' meaning everywhere.
    """
    s = session_type.astype("string")
    letters = s.str.extract(_IMAGE_SET, expand=False)
    out = ("images_" + letters).astype("string")
    gratings = letters.isna() & s.str.contains("gratings", regex=False).fillna(False)
    out = out.mask(gratings, "gratings")
    return out.astype("string")


def behavior_type(session_type: pd.Series) -> pd.Series:
    """``passive_viewing`` when the session type contains ``passive``, else ``active_behavior``."""
    passive = session_type.astype("string").str.contains("passive", regex=False).fillna(False).astype(bool)
    return pd.Series(np.where(passive, "passive_viewing", "active_behavior"), index=session_type.index, dtype="string")


def passive(session_number_: pd.Series) -> pd.Series:
    """Experiment-table ``passive``: session number 2 or 5 (the passive replay sessions of Visual Behavior)."""
    return session_number_.isin([2, 5]).fillna(False).astype(bool)


def is_habituation(session_type: pd.Series) -> pd.Series:
    return session_type.astype("string").str.contains("habituation", regex=False).fillna(False).astype(bool)


def has_omissions(session_type: pd.Series, flash_omissions: pd.Series | None = None) -> pd.Series:
    """Whether a session showed omitted flashes (feeds ``prior_exposures_to_omissions``).

    * ``OPHYS_<n>`` / ``EPHYS_<n>`` sessions that are not habituation sessions: True (Allen rule);
    * habituation sessions: the observed ``flash_omissions`` value (we have no mtrain; the gatherer reads it
      from the session's stimulus presentations, see :mod:`release_platform.metadata.gather`); unknown -> False;
    * everything else (training, other projects): False.
    """
    st = session_type.astype("string")
    physiology = st.str.match(_SESSION_NUMBER).fillna(False).astype(bool)
    habit = is_habituation(st)
    observed = (
        pd.Series(False, index=st.index)
        if flash_omissions is None
        else flash_omissions.reindex(st.index).astype("boolean").fillna(False).astype(bool)
    )
    return (physiology & ~habit) | (habit & observed)


def experience_level(session_type: pd.Series, session_number_: pd.Series, prior_image_set: pd.Series) -> pd.Series:
    """``Training`` for TRAINING_* types; ``Familiar`` for session numbers 0-3; ``Novel 1`` for 4-6 with no prior
    exposure to the image set; ``Novel >1`` for 4-6 otherwise; else the string ``None`` (Allen values)."""
    st = session_type.astype("string")
    num = session_number_.astype("Int64")
    training = st.str.startswith("TRAINING").fillna(False).to_numpy(dtype=bool)
    familiar = num.isin([0, 1, 2, 3]).fillna(False).to_numpy(dtype=bool)
    novel = num.isin([4, 5, 6]).fillna(False).to_numpy(dtype=bool)
    first = (prior_image_set.astype("Int64") == 0).fillna(False).to_numpy(dtype=bool)
    out = np.select([training, familiar, novel & first, novel & ~first], ["Training", "Familiar", "Novel 1", "Novel >1"], "None")
    return pd.Series(out, index=session_type.index, dtype="string")


def ecephys_experience_level(image_set_: pd.Series, prior_image_set: pd.Series) -> pd.Series:
    """Ecephys sessions (Visual Behavior Neuropixels rule): ``Novel`` the first time the mouse sees the image
    set, ``Familiar`` afterwards, ``None`` when the session type names no image set."""
    has_set = image_set_.astype("string").str.startswith("images_").fillna(False).to_numpy(dtype=bool)
    first = (prior_image_set.astype("Int64") == 0).fillna(False).to_numpy(dtype=bool)
    out = np.select([has_set & first, has_set], ["Novel", "Familiar"], "None")
    return pd.Series(out, index=image_set_.index, dtype="string")


# --- exposures ------------------------------------------------------------------------------------------------------


def prior_exposures(history: pd.DataFrame, tie_breakers: tuple[str, ...] = ("order_key",)) -> pd.DataFrame:
    """Cumulative exposure counts per mouse, in acquisition order.

    ``history`` has one row per acquisition with ``mouse_id``, ``date_of_acquisition``, the ``tie_breakers``
    columns (order of acquisitions at the same time), ``session_type``, ``image_set`` and ``has_omissions``.
    Returns, on the same index:

    * ``prior_exposures_to_session_type``: earlier acquisitions of the mouse with the same session type;
    * ``prior_exposures_to_image_set``: earlier acquisitions with the same ``images_<X>`` set (null for
      sessions that show no image set, e.g. gratings);
    * ``prior_exposures_to_omissions``: earlier acquisitions that had omitted flashes.

    Every acquisition of the mouse counts, whatever its workflow state or release status (AllenSDK#2047).
    """
    h = history.sort_values(["mouse_id", "date_of_acquisition", *tie_breakers], kind="stable")
    out = pd.DataFrame(index=h.index)
    out["prior_exposures_to_session_type"] = h.groupby(["mouse_id", "session_type"], sort=False).cumcount().astype("Int64")
    images = h["image_set"].astype("string").str.startswith("images_").fillna(False).astype(bool)
    counts = pd.Series(pd.NA, index=h.index, dtype="Int64")
    if images.any():
        sub = h.loc[images]
        counts.loc[images] = sub.groupby(["mouse_id", "image_set"], sort=False).cumcount().astype("Int64")
    out["prior_exposures_to_image_set"] = counts
    omit = h["has_omissions"].astype(bool).astype("int64")
    out["prior_exposures_to_omissions"] = (omit.groupby(h["mouse_id"], sort=False).cumsum() - omit).astype("Int64")
    return out.reindex(history.index)


# --- subject ----------------------------------------------------------------------------------------------------------


def age_in_days(date_of_acquisition: pd.Series, date_of_birth: pd.Series) -> pd.Series:
    """Whole days between birth and acquisition (floor), nullable Int64."""
    delta = _utc(date_of_acquisition) - _utc(date_of_birth)
    return delta.dt.days.astype("Int64")


def _utc(values: pd.Series) -> pd.Series:
    s = pd.to_datetime(values)
    if getattr(s.dt, "tz", None) is None:
        s = s.dt.tz_localize("UTC")
    else:
        s = s.dt.tz_convert("UTC")
    return s.astype("datetime64[ns, UTC]")


def to_utc(values: pd.Series) -> pd.Series:
    """LIMS datetimes (naive = UTC) as ``datetime64[ns, UTC]``."""
    return _utc(values)


# --- project layout --------------------------------------------------------------------------------------------------

#: (num_targeted_structures, num_depths_per_area) by project code (AllenSDK rule).
PROJECT_LAYOUT: Mapping[str, tuple[int, int]] = {
    "VisualBehavior": (1, 1),
    "VisualBehaviorTask1B": (1, 1),
    "VisualBehaviorMultiscope": (2, 4),
    "VisualBehaviorMultiscope4areasx2d": (4, 2),
}


def project_layout(project_code: pd.Series, observed_structures: pd.Series, observed_depths: pd.Series) -> pd.DataFrame:
    """``num_targeted_structures`` and ``num_depths_per_area`` from the project code (Allen table); for a project
    not in :data:`PROJECT_LAYOUT`, from the session's own planes (distinct structures; most planes per structure)."""
    codes = project_code.astype("string")
    known_s = codes.map(lambda c: PROJECT_LAYOUT.get(c, (None, None))[0] if isinstance(c, str) else None)
    known_d = codes.map(lambda c: PROJECT_LAYOUT.get(c, (None, None))[1] if isinstance(c, str) else None)
    structures = pd.to_numeric(known_s, errors="coerce").astype("Int64").fillna(observed_structures.astype("Int64"))
    depths = pd.to_numeric(known_d, errors="coerce").astype("Int64").fillna(observed_depths.astype("Int64"))
    return pd.DataFrame({"num_targeted_structures": structures, "num_depths_per_area": depths}, index=project_code.index)
