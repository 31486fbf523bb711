"""Release assets: per-session staging of data files, and one assembled, verified release per version.

Staging (partitioned by session kind, in that kind's group, so each session job stages its own files):

* ``behavior_session_release_files`` <- ``behavior_session_metadata`` (behavior NWB),
* ``ophys_session_release_files`` <- ``ophys_experiment_metadata`` (one behavior_ophys NWB per plane),
* ``ecephys_session_release_files`` <- ``ecephys_session_metadata`` (session NWB and the per-probe LFP NWB files
  the probes table names, ``lfp_probe_<probe id>.nwb``, staged next to the session).

Each reads its partition's metadata rows, copies (verified, one read for SHA-256 + BLAKE2b + dandi-etag) the files
they name into ``<root>/<asset>/<partition>/``, records their digests in ``release_records.json`` there and advances
the session's LIMS ``workflow_state`` to ``passed`` (:mod:`release_platform.assets.lims_registration`). A re-run
skips unchanged files, so a new session costs only its own files.

Assembly: ``release_manifest`` is partitioned by a dynamic ``release_version`` partition whose keys are semantic
versions (add one per release, e.g. in the UI or with ``instance.add_dynamic_partitions("release_version",
["1.0.0"])``); the project name, layout and base URL come from run config (:class:`ReleaseConfig`). One partition
per version keeps each release's materialization, check result and files separate and immutable-by-default. It
reads the release-level metadata tables (which rows are released) and every materialized staging partition's
records (the digests), hard-links the staged files into the layout under
``<root>/release_manifest/<version>/<project>/`` (a verified copy across filesystems), writes the release CSVs and
the manifest, and reports the changelog against the previous version. The blocking check
``release_manifest_verified`` re-hashes that tree against its manifest (missing / extra / mismatched files).
"""


import warnings
from pathlib import Path
from typing import Literal, Optional

import dagster as dg

from release_platform.assets.failures import asset_failure
from release_platform.assets.icephys import ICEPHYS_RELEASE_TABLES
from release_platform.assets.lims_registration import mark_release_files_staged
from release_platform.assets.metadata import RELEASE_ASSETS as METADATA_RELEASE_ASSETS
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.assets.stimulus import STIMULUS_RELEASE_TABLES
from release_platform.errors import InputError
from release_platform.lims.resource import LimsResource

# staging asset -> (session kind, per-session metadata asset, tables naming files)
STAGING_ASSETS = {
    "behavior_session_release_files": ("behavior_session", "behavior_session_metadata", ("behavior_session_table",)),
    "ophys_session_release_files": ("ophys_session", "ophys_experiment_metadata", ("ophys_experiment_table",)),
    "ecephys_session_release_files": ("ecephys_session", "ecephys_session_metadata", ("ecephys_session_table", "probes")),
    "icephys_cell_release_files": ("icephys_cell", "icephys_cell_metadata", ("icephys_cells_table",)),
}
RELEASE_GROUP = "release"
release_version_partitions = dg.DynamicPartitionsDefinition(name="release_version")


class StagingConfig(dg.Config):
    max_workers: int = 2
    file_mode: str = "644"
    allow_group_write: bool = False


class ReleaseConfig(dg.Config):
    project: str = "release-platform"
    layout: Literal["allen", "dandi"] = "allen"
    base_url: Optional[str] = None
    max_workers: int = 2
    file_mode: str = "644"
    allow_group_write: bool = False


def _mode(config) -> int:
    from release_platform.release.modes import parse_mode

    return parse_mode(config.file_mode, allow_group_write=config.allow_group_write, what="file_mode")


def _current_partitions(context, asset_name: str, kind: str) -> list[str]:
    current = set(context.instance.get_dynamic_partitions(PARTITIONS_BY_KIND[kind].name))
    done = set(context.instance.get_materialized_partitions(dg.AssetKey(asset_name)))
    return sorted(done & current, key=lambda k: int(k) if k.isdigit() else k)


# --- per-session staging -----------------------------------------------------------------------------------------


def _staging_asset(name: str, kind: str, metadata_asset: str, tables: tuple[str, ...]) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        partitions_def=PARTITIONS_BY_KIND[kind],
        deps=[metadata_asset],
        group_name=kind,
        kinds={"nwb"},
        description=f"This {kind}'s release data files (named by {', '.join(tables)}), copied, verified and digested "
                    "(SHA-256, BLAKE2b, dandi-etag) for release; digests in release_records.json.",
    )
    def _asset(context: dg.AssetExecutionContext, config: StagingConfig, lims: LimsResource,
               storage: StorageResource) -> dg.MaterializeResult:
        from release_platform.metadata.io import read_parquet
        from release_platform.release.build import stage_files

        pk = context.partition_key
        entity = f"{kind} {pk}"
        root = storage.root_path()
        frames = {}
        for table in tables:
            path = root / metadata_asset / pk / f"{table}.parquet"
            if path.is_file():
                frames[table] = read_parquet(table, path)
        if not frames:
            raise asset_failure(context, f"{entity}: no metadata rows under {root / metadata_asset / pk}; materialize {metadata_asset} first")
        try:
            staged, report = stage_files(frames, storage.dir_for(name, pk), source_roots=[root], mode=_mode(config),
                                         max_workers=config.max_workers)
        except InputError as exc:
            raise asset_failure(context, exc, entity) from None
        context.log.info(f"{entity}: {report.describe()}")
        state = mark_release_files_staged(lims, kind, pk)
        return dg.MaterializeResult(metadata={
            "workflow_state": state or "unchanged",
            "files": len(staged),
            "bytes": report.bytes_total,
            "bytes_copied": report.bytes_copied,
            "files_unchanged": report.files_skipped,
            "records": str(storage.dir_for(name, pk) / "release_records.json"),
            "file_ids": dg.MetadataValue.json([s.file_id for s in staged]),
        })

    return _asset


# --- the release -------------------------------------------------------------------------------------------------


def _release_dir(storage: StorageResource, version: str) -> Path:
    return storage.root_path() / "release_manifest" / version


def _previous_manifest(storage: StorageResource, project: str, version: str) -> Optional[Path]:
    from release_platform.release.manifest import latest_manifest, parse_semver

    base = storage.root_path() / "release_manifest"
    if not base.is_dir():
        return None
    candidates = []
    for vdir in base.iterdir():
        try:
            if parse_semver(vdir.name) >= parse_semver(version):
                continue
        except InputError:
            continue
        candidates += list((vdir / project / "manifests").glob(f"{project}_manifest_v*.json"))
    return latest_manifest(candidates)


@dg.asset(
    name="release_manifest",
    partitions_def=release_version_partitions,
    deps=[
        *[dg.AssetDep(name, partition_mapping=dg.AllPartitionMapping()) for name in STAGING_ASSETS],
        *sorted({asset for asset, _ in METADATA_RELEASE_ASSETS.values()}),
        *sorted({asset for asset, _ in ICEPHYS_RELEASE_TABLES.values()}),
        *sorted({asset for asset, _ in STIMULUS_RELEASE_TABLES.values()}),
    ],
    group_name=RELEASE_GROUP,
    kinds={"json"},
    description="One release version (partition key = semver): the staged session files hard-linked into the layout "
                "under <root>/release_manifest/<version>/<project>/, the release CSVs and the AllenSDK-format manifest "
                "(+ size, sha256, dandi-etag).",
)
def release_manifest(context: dg.AssetExecutionContext, config: ReleaseConfig, storage: StorageResource) -> dg.MaterializeResult:
    from release_platform.release.build import ReleaseResult, StagedFile, load_tables, make_release, read_staged
    from release_platform.release.changelog import compare_manifests
    from release_platform.release.manifest import load_manifest, parse_semver

    version = context.partition_key
    root = storage.root_path()
    dandiset = None
    if config.layout == "dandi":  # dandiset.yaml from the project's publication metadata in LIMS (the configured one)
        dandiset, why = _dandiset(config.project)
        if dandiset is None:
            context.log.warning(f"release {version}: no dandiset.yaml: {why}")
    try:
        parse_semver(version)
        table_paths = {}
        for table, (asset, _) in {**METADATA_RELEASE_ASSETS, **ICEPHYS_RELEASE_TABLES, **STIMULUS_RELEASE_TABLES}.items():
            path = root / asset / f"{table}.parquet"
            if path.is_file():
                table_paths[table] = path
        if not table_paths:
            raise InputError("no release metadata tables under the storage root; run release_metadata_job first", path=root)
        frames = load_tables(table_paths)
        staged: dict[int, StagedFile] = {}
        staged_roots: dict[int, Path] = {}
        for name, (kind, _, _) in STAGING_ASSETS.items():
            for pk in _current_partitions(context, name, kind):
                stage_dir = root / name / pk
                for rec in read_staged(stage_dir):
                    staged[rec.file_id] = rec
                    staged_roots[rec.file_id] = stage_dir
        result: ReleaseResult = make_release(
            _release_dir(storage, version), config.project, version, layout=config.layout, frames=frames, storage_root=root,
            source_roots=[root], staged=staged, staged_roots=staged_roots, base_url=config.base_url,
            max_workers=config.max_workers, mode=_mode(config), dandiset=dandiset)
    except InputError as exc:
        raise asset_failure(context, f"release {version}: {exc}") from None
    for note in result.notes:
        context.log.warning(f"release {version}: {note}")
    metadata = {
        "manifest_path": str(result.manifest_path),
        "project": config.project,
        "layout": config.layout,
        "data_files": len(result.manifest["data_files"]),
        "metadata_files": dg.MetadataValue.json(sorted(result.manifest["metadata_files"])),
        "bytes": result.copy.bytes_total,
        "files_linked": sum(1 for r in result.copy.records if r.linked),
        "bytes_copied": result.copy.bytes_copied,
        "manifest_written": result.manifest_written,
    }
    previous = _previous_manifest(storage, config.project, version)
    if previous is not None:
        try:
            changelog = compare_manifests(load_manifest(previous), result.manifest)
            metadata["previous_version"] = changelog.old_version
            metadata["changelog"] = dg.MetadataValue.md("```\n" + changelog.summary() + "\n```")
            metadata["changes"] = dg.MetadataValue.json(changelog.counts())
        except InputError as exc:
            context.log.warning(f"release {version}: previous manifest unreadable, no changelog: {exc}")
    return dg.MaterializeResult(metadata=metadata)


def _dandiset(project: str):
    from release_platform.release.dandi import dandiset_from_lims

    from release_platform.lims import LimsClient
    from release_platform.lims.client import LimsUnavailableError

    try:
        client = LimsClient()
        try:
            return dandiset_from_lims(client, project)
        finally:
            client.dispose()
    except LimsUnavailableError as exc:
        return None, f"LIMS unavailable ({exc})"


with warnings.catch_warnings():
    # partitions_def on an asset check is marked preview by Dagster; we rely on it knowingly.
    warnings.simplefilter("ignore", dg.PreviewWarning)

    @dg.asset_check(
        asset=release_manifest,
        name="release_manifest_verified",
        blocking=True,
        partitions_def=release_version_partitions,
        description="Re-hash the assembled release against its manifest: no missing, extra or mismatched file; "
                    "manifest valid (cloud-cache rules); names follow the layout (DANDI rules for dandi).",
    )
    def release_manifest_verified(context: dg.AssetCheckExecutionContext, storage: StorageResource) -> dg.AssetCheckResult:
        from release_platform.release.verify import find_project_dir, verify_release

        version = context.partition_key
        try:
            report = verify_release(find_project_dir(_release_dir(storage, version)))
        except InputError as exc:
            return dg.AssetCheckResult(passed=False, metadata={"problem": str(exc)})
        problems = [{"kind": p.kind, "path": p.path, "detail": p.detail} for p in report.problems]
        return dg.AssetCheckResult(
            passed=report.ok,
            metadata={
                "files_checked": report.files_checked,
                "bytes_checked": report.bytes_checked,
                "manifest": str(report.manifest_path),
                "problems": dg.MetadataValue.json(problems[:200]),
                "problem_count": len(problems),
            },
            description=report.describe()[:1000],
        )


_staging = {name: _staging_asset(name, kind, meta, tables) for name, (kind, meta, tables) in STAGING_ASSETS.items()}
behavior_session_release_files = _staging["behavior_session_release_files"]
ophys_session_release_files = _staging["ophys_session_release_files"]
ecephys_session_release_files = _staging["ecephys_session_release_files"]

release_job = dg.define_asset_job(
    name="release_job",
    selection=dg.AssetSelection.assets(release_manifest),
    description="Assemble and verify one release version (partition = semver) from the staged session files.",
)

RELEASE_ASSETS = [*_staging.values(), release_manifest]
RELEASE_CHECKS = [release_manifest_verified]
RELEASE_JOBS = [release_job]
