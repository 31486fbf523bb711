"""Resources besides the LIMS: the storage root."""


from pathlib import Path
from typing import Optional

import dagster as dg

from release_platform.storage import artifact_dir, storage_root


class StorageResource(dg.ConfigurableResource):
    """Root under which every artifact lives: ``<root>/<asset path>/<partition key>/...``.

    ``root`` from config, else ``RELEASE_PLATFORM_STORAGE``, else ``.release_platform/storage``.
    """

    root: Optional[str] = None

    def root_path(self) -> Path:
        return Path(self.root).absolute() if self.root else storage_root()

    def dir_for(self, asset_name: str, partition_key: str) -> Path:
        return artifact_dir(self.root_path(), asset_name, partition_key)
