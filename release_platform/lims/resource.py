"""The LIMS as a Dagster resource (the only Dagster-aware module of the LIMS package)."""


from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from release_platform.lims.client import LimsClient, default_lims_url


class LimsResource(dg.ConfigurableResource):
    """LIMS connection. ``url`` from config, else ``RELEASE_PLATFORM_LIMS_URL``, else the embedded SQLite file."""

    url: Optional[str] = None
    _client: Optional[LimsClient] = PrivateAttr(default=None)

    def get_client(self) -> LimsClient:
        if self._client is None:
            self._client = LimsClient(self.url or default_lims_url())
        return self._client

    def teardown_after_execution(self, context) -> None:
        if self._client is not None:
            self._client.dispose()
            self._client = None
