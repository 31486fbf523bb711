"""release_platform: LIMS -> processing -> NWB -> QC -> verified public data release, on Dagster."""

__version__ = "0.1.0"
