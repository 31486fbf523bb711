"""Resources besides the LIMS: the storage root."""


from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import PrivateAttr

from release_platform.assets.dagster_internals import current_asset_names
from release_platform.assets.partitions import session_key
from release_platform.storage import artifact_dir, partition_lock, storage_root


class StorageResource(dg.ConfigurableResource):
    """Root under which every artifact lives: ``<root>/<asset path>/<partition key>/...``.

    ``root`` from config, else ``RELEASE_PLATFORM_STORAGE``, else ``.release_platform/storage``.
    """

    root: Optional[str] = None
    _held: dict = PrivateAttr(default_factory=dict)

    def root_path(self) -> Path:
        return Path(self.root).absolute() if self.root else storage_root()

    def dir_for(self, asset_name: str, partition_key: str) -> Path:
        """``<root>/<asset_name>/<partition_key>``, created if missing; the key must be a LIMS id, so the
        directory is always one level below ``<root>/<asset_name>`` (a key like ``../x`` is refused).

        When the running step materializes ``asset_name``, the directory's advisory lock is taken (held until the
        step's resources are torn down), so a second process writing the same partition of the same asset fails at
        once naming the pid that holds it."""
        partition_key = session_key(partition_key, asset_name)
        key = (asset_name, partition_key)
        if key not in self._held and asset_name in current_asset_names():
            self._held[key] = partition_lock(self.root_path(), asset_name, partition_key).acquire()
        return artifact_dir(self.root_path(), asset_name, partition_key)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        held = list(self._held.values())
        self._held.clear()
        for lock in held:
            lock.release()
