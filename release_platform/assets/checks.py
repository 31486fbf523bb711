"""Registry checks as Dagster asset checks: :func:`asset_check_result` turns a
:class:`release_platform.qc.CheckResult` into a ``dg.AssetCheckResult``. A failure of a blocking importance
(:data:`release_platform.qc.BLOCKING`) has severity ERROR, any other failure WARN; the result's metadata
(plain data) becomes the check's metadata, and its id is recorded as ``check_id``."""

from __future__ import annotations

from typing import Any

import dagster as dg

from release_platform.qc import CheckResult, is_blocking

__all__ = ["asset_check_result"]


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
