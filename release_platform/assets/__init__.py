"""The Dagster layer: thin wiring around the science packages, one module per stage."""
