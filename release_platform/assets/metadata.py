"""Release metadata as assets: per-session rows (partitioned) and the release-level tables that assemble them.

Per session kind, each partition writes its own rows as Parquet under
``<root>/<asset>/<partition>/<table>.parquet`` and validates them with the table's pandera model in a blocking,
partitioned check, so a new session costs only its own rows. The release-level tables (unpartitioned) read the
Parquet file of every materialized partition, write ``<root>/<table asset>/<table>.parquet`` and ``.csv``
(AllenSDK-compatible), and run blocking checks: the model (ids unique across the whole release), the
cross-table references and file-id collisions.

Data flows one way: a per-session asset takes its rows from the session's input asset (``release_rows``, fetched
from LIMS there) and the paths of its data files from the NWB assets it depends on in the same partition (each
returns a :class:`~release_platform.metadata.files.DataFiles`: ``{entity id: path}``); it neither queries LIMS
nor searches the storage root. An expected file that the NWB asset did not report, or that is gone from disk,
is handled by the ``on_missing_file`` run config (default ``error``; ``warn`` keeps the row with a null
``file_id``; ``skip`` drops it). An NWB partition that was never materialized counts as having written nothing.
"""


import warnings
from typing import Literal

import dagster as dg

from release_platform.assets.failures import asset_failure
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.errors import InputError

# The table models, builders and Parquet I/O (pandas, pandera, pyarrow) are imported by the steps that use them;
# loading the code location does not pay for them.

# per-session asset -> (session kind, tables it holds, the kind's input asset, the NWB assets whose files its rows link to)
SESSION_ASSETS = {
    "behavior_session_metadata": ("behavior_session", ("behavior_session_table",), "behavior_session_inputs", ("behavior_nwb",)),
    "ophys_session_metadata": ("ophys_session", ("ophys_session_table",), "ophys_session_inputs", ()),
    "ophys_experiment_metadata": ("ophys_session", ("ophys_experiment_table",), "ophys_session_inputs", ("behavior_ophys_nwb",)),
    "ophys_cells_metadata": ("ophys_session", ("ophys_cells_table",), "ophys_session_inputs", ()),
    "ecephys_session_metadata": ("ecephys_session", ("ecephys_session_table", "probes", "channels", "units"),
                                 "ecephys_session_inputs", ("ecephys_session_nwb", "ecephys_probe_lfp_nwb")),
}

# NWB asset -> the file kind of the DataFiles it returns
NWB_FILE_KIND = {"behavior_nwb": "behavior_nwb", "behavior_ophys_nwb": "behavior_ophys_nwb",
                 "ecephys_session_nwb": "ecephys_nwb", "ecephys_probe_lfp_nwb": "ecephys_lfp_nwb"}

# release table -> (release asset name, per-session source asset)
RELEASE_ASSETS = {
    "behavior_session_table": ("behavior_session_table", "behavior_session_metadata"),
    "ophys_session_table": ("ophys_session_table", "ophys_session_metadata"),
    "ophys_experiment_table": ("ophys_experiment_table", "ophys_experiment_metadata"),
    "ophys_cells_table": ("ophys_cells_table", "ophys_cells_metadata"),
    "ecephys_session_table": ("ecephys_session_table", "ecephys_session_metadata"),
    "probes": ("ecephys_probes_table", "ecephys_session_metadata"),
    "channels": ("ecephys_channels_table", "ecephys_session_metadata"),
    "units": ("ecephys_units_table", "ecephys_session_metadata"),
}
RELEASE_GROUP = "release_metadata"

# What the asset graph needs to know of the table specs (release_platform.metadata.schemas.TABLES) when the code
# location loads, without importing the models: each release table's parent tables (its references, sorted) and,
# in TABLES order, the release tables that name a data file. A test keeps them equal to TABLES.
TABLE_PARENTS = {
    "behavior_session_table": (),
    "ophys_session_table": ("behavior_session_table",),
    "ophys_experiment_table": ("ophys_session_table",),
    "ophys_cells_table": ("ophys_experiment_table",),
    "ecephys_session_table": ("behavior_session_table",),
    "probes": ("ecephys_session_table",),
    "channels": ("probes",),
    "units": ("channels", "probes"),
}
TABLES_WITH_FILES = ("behavior_session_table", "ophys_experiment_table", "ecephys_session_table", "probes")


class MetadataConfig(dg.Config):
    on_missing_file: Literal["error", "warn", "skip"] = "error"


def _table_schema_metadata(table: str) -> dg.TableSchema:
    from release_platform.metadata import TABLES

    schema = TABLES[table].model.to_schema()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, str(col.dtype), description=col.description,
                           constraints=dg.TableColumnConstraints(nullable=col.nullable, unique=col.unique))
            for name, col in schema.columns.items()
        ]
    )


def _release_rows(session, input_asset: str):
    rows = getattr(session, "release_rows", None)
    if rows is None:
        raise InputError(f"{input_asset} was materialized before it carried the release metadata rows; "
                         f"re-materialize {input_asset}")
    return rows


def _written(name: str, value):
    """The files an NWB asset reported (a :class:`~release_platform.metadata.files.DataFiles`); None when its
    partition was never materialized."""
    from release_platform.metadata.files import DataFiles

    if value is None or isinstance(value, DataFiles):
        return value
    raise InputError(f"{name} was materialized before it reported its files as DataFiles; re-materialize {name}")


def _partition_file(storage: StorageResource, asset_name: str, partition_key: str, table: str):
    return storage.root_path() / asset_name / str(partition_key) / f"{table}.parquet"


def _release_file(storage: StorageResource, table: str, suffix: str):
    asset_name = RELEASE_ASSETS[table][0]
    return storage.root_path() / asset_name / f"{table}.{suffix}"


# --- per-session assets and their checks ----------------------------------------------------------------------


def _session_asset(name: str, kind: str, tables: tuple[str, ...], input_asset: str, nwb_assets: tuple[str, ...]) -> dg.AssetsDefinition:
    # An NWB partition never materialized arrives as None (the IO manager's allow_missing_partitions); its
    # expected files then count as missing, as the run config says.
    ins = {"session": dg.AssetIn(input_asset)}
    ins.update({nwb: dg.AssetIn(nwb, metadata={"allow_missing_partitions": True}) for nwb in nwb_assets})

    @dg.asset(
        name=name,
        partitions_def=PARTITIONS_BY_KIND[kind],
        ins=ins,
        group_name=kind,
        kinds={"pandas", "parquet"},
        description=f"This {kind}'s rows of {', '.join(tables)} (Parquet), from the LIMS rows its input asset carries"
                    + (f" and the files {', '.join(nwb_assets)} wrote." if nwb_assets else "."),
    )
    def _asset(context: dg.AssetExecutionContext, config: MetadataConfig, storage: StorageResource, session, **nwb):
        from release_platform.metadata import MetadataWarning, Targets, build_tables, links_from
        from release_platform.metadata.io import write_parquet

        session_id = int(context.partition_key)
        entity = f"{kind} {session_id}"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MetadataWarning)
            try:
                rows = _release_rows(session, input_asset)
                links = links_from(f for f in (_written(n, nwb[n]) for n in nwb_assets) if f is not None)
                for n in nwb_assets:  # a kind with no report still expects its files (reported missing)
                    links.paths.setdefault(NWB_FILE_KIND[n], {})
                built = build_tables(rows, Targets.only(kind, [session_id]), files=links,
                                     on_missing_file=config.on_missing_file, tables=tables)
            except InputError as exc:
                raise asset_failure(context, exc, entity) from None
        notes = [str(w.message) for w in caught if issubclass(w.category, MetadataWarning)]
        for note in notes:
            context.log.warning(f"{entity}: {note}")
        out_dir = storage.dir_for(name, context.partition_key)
        paths = {}
        for table in tables:
            paths[table] = str(write_parquet(table, built.tables[table], out_dir / f"{table}.parquet"))
        first = tables[0]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(built.tables[first]),
                "rows": dg.MetadataValue.json({t: len(built.tables[t]) for t in tables}),
                "paths": dg.MetadataValue.json(paths),
                "missing_files": dg.MetadataValue.json(built.missing_files),
                "warnings": dg.MetadataValue.json(notes),
                "dagster/column_schema": _table_schema_metadata(first),
            }
        )

    return _asset


def _session_check(asset: dg.AssetsDefinition, name: str, kind: str, tables: tuple[str, ...]) -> dg.AssetChecksDefinition:
    # A check on a partitioned asset needs partitions_def (else it reads the wrong partition); Dagster marks
    # that argument "preview", which we accept knowingly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        decorator = dg.asset_check(
            asset=asset,
            name=f"{name}_schema",
            blocking=True,
            partitions_def=PARTITIONS_BY_KIND[kind],
            description=f"Validate this partition's {', '.join(tables)} rows with the pandera model(s); data files must exist.",
        )

        @decorator
        def _check(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
            from release_platform.metadata import validate_table
            from release_platform.metadata.io import read_parquet

            partition_key = context.partition_key
            frames = {}
            problems = []
            for table in tables:
                try:
                    frames[table] = read_parquet(table, _partition_file(storage, name, partition_key, table))
                except InputError as exc:
                    problems.append(str(exc))
            if problems:
                return dg.AssetCheckResult(passed=False, metadata={"partition": partition_key, "problems": dg.MetadataValue.json(problems)})
            reports = {t: validate_table(t, frames[t], parents=frames, check_files=True) for t in tables}
            return _check_result(reports, {"partition": partition_key})

    return _check


def _check_result(reports: dict, extra: dict) -> dg.AssetCheckResult:
    passed = all(r.passed for r in reports.values())
    failures = [{"table": t, **f} for t, r in reports.items() for f in r.failures]
    failures += [{"table": t, "column": "<table>", "check": f"parent {p} available", "n_rows": 0, "row_ids": [],
                  "failure_values": []} for t, r in reports.items() for p in r.missing_parents]
    metadata = {
        **extra,
        "rows": dg.MetadataValue.json({t: r.rows for t, r in reports.items()}),
        "failures": dg.MetadataValue.json(failures),
        "failed_columns": dg.MetadataValue.json(sorted({f["column"] for f in failures})),
    }
    if failures:
        metadata["summary"] = dg.MetadataValue.md(
            "| table | column | check | rows | row ids |\n|---|---|---|---|---|\n"
            + "".join(f"| {f['table']} | {f['column']} | {f['check']} | {f['n_rows']} | {f['row_ids'][:10]} |\n" for f in failures)
        )
    description = "; ".join(r.summary() for r in reports.values())
    return dg.AssetCheckResult(passed=passed, metadata=metadata, description=description[:1000])


# --- release-level tables ------------------------------------------------------------------------------------------


def _release_asset(table: str) -> dg.AssetsDefinition:
    asset_name, source = RELEASE_ASSETS[table]
    kind = SESSION_ASSETS[source][0]

    @dg.asset(
        name=asset_name,
        deps=[source],
        group_name=RELEASE_GROUP,
        kinds={"pandas", "parquet", "csv"},
        description=f"The release's {table}: every materialized {kind} partition's rows (Parquet + AllenSDK CSV).",
    )
    def _asset(context: dg.AssetExecutionContext, storage: StorageResource):
        import pandas as pd

        from release_platform.metadata import TABLES
        from release_platform.metadata.io import read_parquet, write_csv, write_parquet
        from release_platform.metadata.schemas import empty_table

        spec = TABLES[table]
        key = dg.AssetKey(source)
        current = set(context.instance.get_dynamic_partitions(PARTITIONS_BY_KIND[kind].name))
        partitions = sorted(set(context.instance.get_materialized_partitions(key)) & current, key=lambda k: int(k))
        frames, missing = [], []
        for pk in partitions:
            path = _partition_file(storage, source, pk, table)
            if not path.is_file():
                missing.append(f"{kind} {pk}: {path}")
                continue
            try:
                frames.append(read_parquet(table, path))
            except InputError as exc:
                missing.append(str(exc))
        if missing:
            raise asset_failure(context, f"{table}: rows of materialized partitions are missing on disk: {'; '.join(missing[:10])}")
        nonempty = [f for f in frames if len(f)]
        frame = pd.concat(nonempty, ignore_index=True) if nonempty else empty_table(table)
        frame = frame.sort_values(spec.id_column, kind="stable").reset_index(drop=True)
        parquet = write_parquet(table, frame, _release_file(storage, table, "parquet"))
        csv = write_csv(table, frame, _release_file(storage, table, "csv"))
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(frame),
                "partitions": len(partitions),
                "parquet_path": str(parquet),
                "csv_path": str(csv),
                "dagster/column_schema": _table_schema_metadata(table),
            }
        )

    return _asset


def _release_check(asset: dg.AssetsDefinition, table: str) -> dg.AssetChecksDefinition:
    parents = list(TABLE_PARENTS[table])

    @dg.asset_check(
        asset=asset,
        name=f"{table}_valid",
        blocking=True,
        additional_deps=[RELEASE_ASSETS[p][0] for p in parents],
        description=f"Validate the whole {table}: model, ids unique across the release, data files exist"
        + (f", references to {', '.join(parents)}" if parents else "") + ".",
    )
    def _check(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        from release_platform.metadata import validate_table
        from release_platform.metadata.io import read_parquet

        try:
            frame = read_parquet(table, _release_file(storage, table, "parquet"))
        except InputError as exc:
            return dg.AssetCheckResult(passed=False, metadata={"problem": str(exc)})
        parent_frames = {}
        for p in parents:
            path = _release_file(storage, p, "parquet")
            parent_frames[p] = read_parquet(p, path) if path.is_file() else None
        report = validate_table(table, frame, parents=parent_frames, check_files=True, require_parents=True)
        return _check_result({table: report}, {})

    return _check


def _file_id_check(asset: dg.AssetsDefinition) -> dg.AssetChecksDefinition:
    with_files = list(TABLES_WITH_FILES)

    @dg.asset_check(
        asset=asset,
        name="file_ids_unique_across_tables",
        blocking=True,
        additional_deps=[RELEASE_ASSETS[t][0] for t in with_files if RELEASE_ASSETS[t][0] != asset.key.path[-1]],
        description="No two release data files (behavior, ophys experiment, ecephys session and probe LFP NWB) share a file id.",
    )
    def _check(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        from release_platform.metadata.files import check_file_id_collisions
        from release_platform.metadata.io import read_parquet

        frames = {t: read_parquet(t, _release_file(storage, t, "parquet")) for t in with_files
                  if _release_file(storage, t, "parquet").is_file()}
        try:
            check_file_id_collisions(frames)
        except InputError as exc:
            return dg.AssetCheckResult(passed=False, metadata={"problem": str(exc), "tables": sorted(frames)})
        n = sum(int(f["file_id"].notna().sum()) for f in frames.values())
        return dg.AssetCheckResult(passed=True, metadata={"file_ids": n, "tables": sorted(frames)})

    return _check


_session_assets = {name: _session_asset(name, *spec) for name, spec in SESSION_ASSETS.items()}
_session_checks = [_session_check(_session_assets[name], name, kind, tables) for name, (kind, tables, *_) in SESSION_ASSETS.items()]
_release_assets = {table: _release_asset(table) for table in RELEASE_ASSETS}
_release_checks = [_release_check(_release_assets[table], table) for table in RELEASE_ASSETS]
_release_checks.append(_file_id_check(_release_assets["ophys_experiment_table"]))

behavior_session_metadata = _session_assets["behavior_session_metadata"]
ophys_session_metadata = _session_assets["ophys_session_metadata"]
ophys_experiment_metadata = _session_assets["ophys_experiment_metadata"]
ophys_cells_metadata = _session_assets["ophys_cells_metadata"]
ecephys_session_metadata = _session_assets["ecephys_session_metadata"]

SESSION_METADATA_ASSETS = list(_session_assets.values())
RELEASE_METADATA_ASSETS = list(_release_assets.values())
METADATA_ASSETS = [*SESSION_METADATA_ASSETS, *RELEASE_METADATA_ASSETS]
METADATA_CHECKS = [*_session_checks, *_release_checks]
