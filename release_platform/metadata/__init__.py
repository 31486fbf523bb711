"""Release metadata tables (the AllenSDK project metadata writer, re-imagined) and their pandera models.

Science code: no Dagster, no SQL. The pieces:

* :mod:`~release_platform.metadata.derivations` — pure column rules (cre_line, indicator, session_number,
  image_set, experience_level, prior exposures, ...);
* :mod:`~release_platform.metadata.builders` — :class:`LimsRows` -> every table (:func:`build_tables`);
* :mod:`~release_platform.metadata.gather` — fetch the :class:`LimsRows` for some sessions from LIMS;
* :mod:`~release_platform.metadata.files` — deterministic ``file_id`` and the ``file_path`` columns;
* :mod:`~release_platform.metadata.schemas` — one pandera ``DataFrameModel`` per table (:data:`TABLES`);
* :mod:`~release_platform.metadata.validation` — lazy validation with structured failure reports;
* :mod:`~release_platform.metadata.io` — Parquet / CSV writing and reading;
* :mod:`~release_platform.metadata.dictionary` — the generated ``docs/data_dictionary.md``.
"""

import importlib
import sys
import types

# The names below are imported from their submodule on first use (PEP 562), so importing one light submodule
# (e.g. ``release_platform.metadata.files`` for :class:`DataFiles`) does not import pandera, the builders and
# the validation with it.
_SUBMODULE = {
    **dict.fromkeys(("BuildResult", "LimsRows", "Targets", "build_tables"), "builders"),
    **dict.fromkeys(("FILE_KINDS", "DataFiles", "FileLinks", "MetadataWarning", "attach_files", "check_file_id_collisions",
                     "directory_resolver", "file_id", "file_ids", "links_from"), "files"),
    **dict.fromkeys(("gather", "gather_for", "read_flash_omissions"), "gather"),
    **dict.fromkeys(("ECEPHYS_TABLES", "TABLES", "VBO_TABLES", "columns_of"), "schemas"),
    **dict.fromkeys(("ValidationReport", "table_schema", "validate_table", "validate_tables"), "validation"),
}


def __getattr__(name: str):
    submodule = _SUBMODULE.get(name)
    if submodule is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{submodule}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULE))


class _Package(types.ModuleType):
    """Importing the submodule ``gather`` binds it on the package; the package's name ``gather`` stays the
    function of that name, whichever is imported first."""

    def __setattr__(self, name: str, value) -> None:
        if name == "gather" and isinstance(value, types.ModuleType):
            value = value.gather
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "BuildResult",
    "ECEPHYS_TABLES",
    "DataFiles",
    "FILE_KINDS",
    "FileLinks",
    "LimsRows",
    "MetadataWarning",
    "TABLES",
    "Targets",
    "VBO_TABLES",
    "ValidationReport",
    "attach_files",
    "build_tables",
    "check_file_id_collisions",
    "columns_of",
    "directory_resolver",
    "file_id",
    "file_ids",
    "gather",
    "gather_for",
    "links_from",
    "read_flash_omissions",
    "table_schema",
    "validate_table",
    "validate_tables",
]
