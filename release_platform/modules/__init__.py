"""Standalone runners: ``python -m release_platform.modules.<stage> --input_json in.json --output_json out.json``.

Each stage declares a pydantic input model and a ``run(inputs) -> dict`` function that calls the same
code the Dagster assets call. See :mod:`release_platform.modules._harness`.
"""
