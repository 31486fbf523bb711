"""NWB writing and checking (no Dagster): the shared write protocol, chunk/codec configuration,
inspection, and the per-modality writers and readers: ``release_platform.nwb.ophys`` (per-plane
behavior+ophys files), ``release_platform.nwb.behavior`` (behavior-only files), ``release_platform.nwb.ecephys``
(session and per-probe LFP files) and ``release_platform.nwb.readers``."""

import release_platform.nwb.extension  # noqa: F401  (registers the platform's NWB extension with PyNWB)
from release_platform.nwb.config import BackendConfiguration, CodecUnavailableError, DatasetIOConfiguration
from release_platform.nwb.inspection import InspectionReport, inspect_nwb, validate_nwb
from release_platform.nwb.protocol import (
    H5DatasetIterator,
    NwbWriteError,
    WriteResult,
    deterministic_identifier,
    provenance_record,
    read_provenance,
    write_nwb,
)

__all__ = [
    "BackendConfiguration",
    "CodecUnavailableError",
    "DatasetIOConfiguration",
    "H5DatasetIterator",
    "InspectionReport",
    "NwbWriteError",
    "WriteResult",
    "deterministic_identifier",
    "inspect_nwb",
    "provenance_record",
    "read_provenance",
    "validate_nwb",
    "write_nwb",
]
