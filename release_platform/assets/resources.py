"""Resources besides the LIMS: the storage root."""


from pathlib import Path
from typing import Optional

import dagster as dg

from release_platform.assets.partitions import session_key
from release_platform.storage import artifact_dir, storage_root


class StorageResource(dg.ConfigurableResource):
    """Root under which every artifact lives: ``<root>/<asset path>/<partition key>/...``.

    ``root`` from config, else ``RELEASE_PLATFORM_STORAGE``, else ``.release_platform/storage``.
    """

    root: Optional[str] = None

    def root_path(self) -> Path:
        return Path(self.root).absolute() if self.root else storage_root()

    def dir_for(self, asset_name: str, partition_key: str) -> Path:
        """``<root>/<asset_name>/<partition_key>``, created if missing; the key must be a LIMS id, so the
        directory is always one level below ``<root>/<asset_name>`` (a key like ``../x`` is refused)."""
        return artifact_dir(self.root_path(), asset_name, session_key(partition_key, asset_name))
