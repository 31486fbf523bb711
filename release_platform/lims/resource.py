"""The LIMS as a Dagster resource (the only Dagster-aware module of the LIMS package)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import dagster as dg
from pydantic import PrivateAttr

if TYPE_CHECKING:  # the client (SQLAlchemy) is imported when a step first asks for it
    from release_platform.lims.client import LimsClient


class LimsResource(dg.ConfigurableResource):
    """LIMS connection. ``url`` from config, else ``RELEASE_PLATFORM_LIMS_URL``, else the embedded SQLite file."""

    url: Optional[str] = None
    _client: Any = PrivateAttr(default=None)  # the LimsClient, made on first use

    def get_client(self) -> LimsClient:
        from release_platform.lims.client import LimsClient, default_lims_url

        if self._client is None:
            self._client = LimsClient(self.url or default_lims_url())
        return self._client

    def teardown_after_execution(self, context) -> None:
        if self._client is not None:
            self._client.dispose()
            self._client = None
