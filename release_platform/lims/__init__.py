"""The LIMS: schema, versioned migrations, a typed client, and the Dagster resource.

Only this package speaks SQL, and always with bound parameters.
"""

import importlib

# Imported from the client on first use (PEP 562): importing the Dagster resource does not import SQLAlchemy.
_CLIENT_NAMES = ("LimsClient", "LimsUnavailableError", "default_lims_url")


def __getattr__(name: str):
    if name not in _CLIENT_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.client"), name)
    globals()[name] = value
    return value

__all__ = ["LimsClient", "LimsUnavailableError", "default_lims_url"]
