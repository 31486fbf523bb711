"""Registry checks as Dagster asset checks: :func:`asset_check_result` turns a
:class:`release_platform.qc.CheckResult` into a ``dg.AssetCheckResult``. A failure of a blocking importance
(:data:`release_platform.qc.BLOCKING`) has severity ERROR, any other failure WARN; the result's metadata
(plain data) becomes the check's metadata, and its id is recorded as ``check_id``."""

from __future__ import annotations

import warnings
from typing import Any

import dagster as dg

from release_platform.qc import CheckResult, is_blocking

__all__ = ["asset_check_result", "nwb_file_checks"]


def _metadata_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    return dg.MetadataValue.json(value)


def asset_check_result(result: CheckResult) -> dg.AssetCheckResult:
    """The asset-check form of a registry check's result."""
    metadata = {k: _metadata_value(v) for k, v in result.metadata.items() if v is not None}
    metadata.setdefault("check_id", result.check_id)
    return dg.AssetCheckResult(
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR if is_blocking(result.importance) else dg.AssetCheckSeverity.WARN,
        description=result.message,
        metadata=metadata,
    )


def nwb_file_checks(asset: dg.AssetsDefinition, partitions_def: dg.PartitionsDefinition,
                    each: str = "") -> list[dg.AssetChecksDefinition]:
    """The two blocking checks of an NWB asset, on the files it returns (a
    :class:`~release_platform.metadata.files.DataFiles`): ``<asset>_pynwb_valid`` (PyNWB validation) and
    ``<asset>_inspector`` (NWB Inspector, dandi config). ``each`` names the files in the descriptions
    (e.g. ``"plane's file"``)."""
    name = asset.key.path[-1]
    any_file, every_file = (f" in any {each}", f" in every {each}") if each else ("", "")
    # A check on a partitioned asset needs partitions_def (Dagster marks it "preview"; accepted knowingly).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)

        @dg.asset_check(asset=asset, name=f"{name}_pynwb_valid", partitions_def=partitions_def, blocking=True,
                        description=f"PyNWB validation reports no problem{any_file}.")
        def _valid(files) -> dg.AssetCheckResult:
            from release_platform.qc.nwb import check_pynwb_validation

            return asset_check_result(check_pynwb_validation(files.paths.values()))

        @dg.asset_check(asset=asset, name=f"{name}_inspector", partitions_def=partitions_def, blocking=True,
                        description=f"NWB Inspector (dandi config): zero CRITICAL and zero BEST_PRACTICE_VIOLATION{every_file}.")
        def _inspector(files) -> dg.AssetCheckResult:
            from release_platform.qc.nwb import check_nwb_inspector

            return asset_check_result(check_nwb_inspector(files.paths.values()))

    return [_valid, _inspector]
