"""Write the release metadata tables for the sessions published on given dates (the AllenSDK project metadata
writer, reference §7).

Input JSON (the AllenSDK ``BehaviorOphysMetadataInputSchema`` fields, plus ``lims_url`` and the ecephys ones)::

    {"behavior_nwb_dir": "/release/behavior",          # may be null: behavior rows then get no file columns
     "behavior_nwb_prefix": "behavior_session",
     "ophys_nwb_dir": "/release/ophys",                 # may be null
     "ophys_nwb_prefix": "behavior_ophys_experiment",
     "ecephys_nwb_dir": null,                           # optional: set it to also write the 4 ecephys tables
     "ecephys_nwb_prefix": "ecephys_session",
     "output_dir": "/release/metadata",
     "clobber": false,
     "on_missing_file": "error",                        # error | warn | skip
     "data_release_date": ["2026-10-01"],
     "lims_url": null}                                  # default: RELEASE_PLATFORM_LIMS_URL or the embedded LIMS

Which sessions: those with an NWB well-known file (``BehaviorNwb`` on a behavior session, ``BehaviorOphysNwb`` on
an ophys experiment, ``EcephysNwb`` on an ecephys session) whose ``published_at`` falls on one of the release
dates, plus the behavior sessions of the released ophys (and ecephys) sessions. Expected NWB paths: under each
directory, ``<id>/<prefix>_<id>.nwb``, else ``<ophys session id>/<prefix>_<id>.nwb`` (planes), else flat.

Output JSON (§7.2): ``metadata_files`` (absolute CSV paths), ``data_pipeline_metadata``, ``project_name``,
``log_level``. With ``clobber`` false, existing output CSVs are never overwritten: the module fails listing them.

The tables are written together: each to a temporary name beside it (``.<table>.csv.<random>.inprogress``), and
only when every one is written are they renamed onto their final names. A failure (a full disk) leaves no table
under a final name and no temporary file, so a re-run (even with ``clobber`` false) starts clean.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

import pydantic

import release_platform
from release_platform.errors import InputError
from release_platform.lims import LimsClient
from release_platform.lims import metadata_queries as q
from release_platform.metadata import (
    ECEPHYS_TABLES,
    VBO_TABLES,
    FileLinks,
    MetadataWarning,
    Targets,
    build_tables,
    directory_resolver,
    gather,
    validate_tables,
)
from release_platform.metadata.io import write_csv
from release_platform.modules._harness import main_for

if TYPE_CHECKING:
    import pandas as pd


class Inputs(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    behavior_nwb_dir: Optional[str]
    behavior_nwb_prefix: str = "behavior_session"
    ophys_nwb_dir: Optional[str]
    ophys_nwb_prefix: str = "behavior_ophys_experiment"
    ecephys_nwb_dir: Optional[str] = None
    ecephys_nwb_prefix: str = "ecephys_session"
    output_dir: str
    clobber: bool = False
    on_missing_file: Literal["error", "warn", "skip"] = "error"
    data_release_date: list[str] = pydantic.Field(min_length=1)
    lims_url: Optional[str] = None
    project_name: str = "visual-behavior-ophys"
    log_level: str = "INFO"

    @pydantic.field_validator("behavior_nwb_dir", "ophys_nwb_dir", "ecephys_nwb_dir")
    @classmethod
    def _existing_dir(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not Path(value).is_dir():
            raise ValueError(f"{value} is not an existing directory")
        return value

    @pydantic.field_validator("data_release_date")
    @classmethod
    def _dates(cls, values: list[str]) -> list[str]:
        for v in values:
            try:
                dt.date.fromisoformat(v.strip()[:10])
            except ValueError:
                raise ValueError(f"{v!r} is not a date (YYYY-MM-DD)") from None
        return values


    def output_paths(self) -> list[Path]:
        """The CSVs this run writes (the module harness refuses inputs among them)."""
        return list(output_paths(self).values())


def output_paths(args: Inputs) -> dict[str, Path]:
    names = list(VBO_TABLES) + (list(ECEPHYS_TABLES) if args.ecephys_nwb_dir else [])
    out = Path(args.output_dir).absolute()
    return {name: out / f"{name}.csv" for name in names}


def release_targets(client: LimsClient, dates: list[str], with_ecephys: bool) -> tuple[Targets, dict[int, int]]:
    """The released sessions and experiments; also experiment -> ophys session (for per-session NWB dirs)."""
    types = [q.BEHAVIOR_NWB, q.BEHAVIOR_OPHYS_NWB] + ([q.ECEPHYS_NWB] if with_ecephys else [])
    published = q.published_files(client, dates, types)
    by_type = {t: set(published.loc[published["file_type"] == t, "attachable_id"].astype("int64").tolist()) for t in types}
    experiments = q.ophys_experiments(client, ids=by_type[q.BEHAVIOR_OPHYS_NWB]) if by_type[q.BEHAVIOR_OPHYS_NWB] else None
    exp_session = {} if experiments is None else dict(zip(experiments["ophys_experiment_id"].astype("int64"),
                                                            experiments["ophys_session_id"].astype("int64")))
    ophys_ids = set(exp_session.values())
    ecephys_ids = by_type.get(q.ECEPHYS_NWB, set())
    linked = q.behavior_sessions(client, ophys_session_ids=ophys_ids, ecephys_session_ids=ecephys_ids)
    behavior_ids = by_type[q.BEHAVIOR_NWB] | set(linked["behavior_session_id"].astype("int64").tolist())
    targets = Targets(
        behavior_session_ids=behavior_ids,
        ophys_session_ids=ophys_ids,
        ophys_experiment_ids=set(exp_session),
        ecephys_session_ids=ecephys_ids,
    )
    return targets, exp_session


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def write_together(tables: dict[str, "pd.DataFrame"], paths: dict[str, Path]) -> None:
    """Write every table to a temporary name, then rename them all; on any failure remove the temporary files and
    every table this call put under a final name that did not exist before."""
    temps: dict[str, Path] = {}
    renamed: list[tuple[Path, bool]] = []
    try:
        for name, path in paths.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".inprogress")
            os.close(fd)
            temps[name] = Path(tmp)
            write_csv(name, tables[name], tmp)  # fsynced under the temporary name
        for name, path in paths.items():
            existed = path.exists()
            _rename(temps[name], path)
            del temps[name]
            renamed.append((path, existed))
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".inprogress").unlink(missing_ok=True)
        for path, existed in renamed:
            if not existed:
                path.unlink(missing_ok=True)
        raise
    for directory in {p.parent for p in paths.values()}:
        with contextlib.suppress(OSError):
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def run(args: Inputs) -> dict:
    paths = output_paths(args)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.clobber:
        raise InputError(f"output files already exist and clobber is false: {', '.join(existing)}")
    client = LimsClient(args.lims_url)
    try:
        with_ecephys = args.ecephys_nwb_dir is not None
        targets, exp_session = release_targets(client, args.data_release_date, with_ecephys)
        if not (targets.behavior_session_ids or targets.ophys_session_ids or targets.ecephys_session_ids):
            raise InputError(f"no NWB files were published in LIMS ({client.safe_url}) on {', '.join(args.data_release_date)}")
        rows = gather(
            client,
            behavior_session_ids=targets.behavior_session_ids,
            ophys_session_ids=targets.ophys_session_ids,
            ecephys_session_ids=targets.ecephys_session_ids,
        )
    finally:
        client.dispose()

    links = FileLinks(kinds=set())
    if args.behavior_nwb_dir:
        links.kinds.add("behavior_nwb")
        links.paths["behavior_nwb"] = directory_resolver(args.behavior_nwb_dir, "behavior_nwb", targets.behavior_session_ids,
                                                         prefix=args.behavior_nwb_prefix)
    if args.ophys_nwb_dir:
        links.kinds.add("behavior_ophys_nwb")
        links.paths["behavior_ophys_nwb"] = directory_resolver(args.ophys_nwb_dir, "behavior_ophys_nwb", exp_session,
                                                               prefix=args.ophys_nwb_prefix, parent_ids=exp_session)
    if args.ecephys_nwb_dir:
        links.kinds.add("ecephys_nwb")
        links.paths["ecephys_nwb"] = directory_resolver(args.ecephys_nwb_dir, "ecephys_nwb", targets.ecephys_session_ids,
                                                        prefix=args.ecephys_nwb_prefix)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetadataWarning)
        built = build_tables(rows, targets, files=links, on_missing_file=args.on_missing_file, tables=list(paths))
    notes = [str(w.message) for w in caught if issubclass(w.category, MetadataWarning)]
    for note in notes:
        print(f"warning: {note}", flush=True)

    reports = validate_tables(built.tables, check_files=True, require_parents=False)
    bad = [r for r in reports.values() if not r.passed]
    if bad:
        raise InputError("release tables failed validation: " + " | ".join(r.summary() for r in bad))

    write_together({name: built.tables[name] for name in paths}, paths)
    return {
        "metadata_files": [os.fspath(paths[name]) for name in paths],
        "data_pipeline_metadata": [{"name": "release_platform", "version": release_platform.__version__, "comment": ""}],
        "project_name": args.project_name,
        "log_level": args.log_level,
    }


if __name__ == "__main__":
    raise SystemExit(main_for(Inputs, run, __doc__.splitlines()[0]))
