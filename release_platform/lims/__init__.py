"""The LIMS: schema, versioned migrations, a typed client, and the Dagster resource.

Only this package speaks SQL, and always with bound parameters.
"""

from release_platform.lims.client import LimsClient, LimsUnavailableError, default_lims_url

__all__ = ["LimsClient", "LimsUnavailableError", "default_lims_url"]
