"""Resources besides the LIMS: the storage root, and the IO manager of an object-storage root."""


import pickle
from pathlib import Path
from typing import Any, Optional

import dagster as dg
from pydantic import PrivateAttr

from release_platform.assets.dagster_internals import current_asset_names
from release_platform.assets.partitions import session_key
from release_platform.atomic import atomic_path
from release_platform.staging import HDF5_SUFFIXES, RemoteRoot, paths_in, require_local
from release_platform.storage import artifact_dir, partition_lock, remote_storage, storage_root


class StorageResource(dg.ConfigurableResource):
    """Root under which every artifact lives: ``<root>/<asset path>/<partition key>/...``.

    ``root`` from config, else ``RELEASE_PLATFORM_STORAGE``, else ``.release_platform/storage``. The root may be an
    fsspec URL (``s3://bucket/prefix``, with ``endpoint_url`` or ``RELEASE_PLATFORM_STORAGE_ENDPOINT_URL`` for an
    S3-compatible store): then :meth:`dir_for` hands out directories of the local scratch copy, staging an upstream
    asset's directory in from the store first, and :class:`StagingIOManager` writes the step's directories back.
    """

    root: Optional[str] = None
    endpoint_url: Optional[str] = None
    _held: dict = PrivateAttr(default_factory=dict)

    def remote(self) -> Optional[RemoteRoot]:
        return remote_storage(self.root, endpoint_url=self.endpoint_url)

    def root_path(self) -> Path:
        return storage_root(self.root)

    def dir_for(self, asset_name: str, partition_key: str) -> Path:
        """``<root>/<asset_name>/<partition_key>``, created if missing; the key must be a LIMS id, so the
        directory is always one level below ``<root>/<asset_name>`` (a key like ``../x`` is refused).

        When the running step materializes ``asset_name``, the directory's advisory lock is taken (held until the
        step's resources are torn down), so a second process writing the same partition of the same asset fails at
        once naming the pid that holds it. On an object-storage root the directory is the scratch copy: one the
        step writes is registered for upload, one it reads is staged in from the store first."""
        partition_key = session_key(partition_key, asset_name)
        key = (asset_name, partition_key)
        remote = self.remote()
        writing = asset_name in current_asset_names()
        if key not in self._held and writing:
            self._held[key] = partition_lock(self.root_path(), asset_name, partition_key).acquire()
        if remote is not None:
            if writing:
                remote.written.add(remote.local(f"{asset_name}/{partition_key}"))
            else:
                remote.stage_in(f"{asset_name}/{partition_key}")
        return artifact_dir(self.root_path(), asset_name, partition_key)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        held = list(self._held.values())
        self._held.clear()
        for lock in held:
            lock.release()


IO_DIR = ".dagster_io"


class StagingIOManager(dg.ConfigurableIOManager):
    """The IO manager of an object-storage root: asset values are pickled to ``<root>/.dagster_io/<asset>/<partition
    key>.pickle`` on the store (so a step on another machine can load them), and

    * before an output is stored, every directory the step wrote under the scratch copy (and every scratch file the
      value names) is written back to the store with the atomic protocol (:meth:`RemoteRoot.upload`), inside the
      step, so a failed upload fails the step;
    * after an input is loaded, every scratch file it names is staged in from the store (missing or stale only),
      so the paths an upstream asset handed down exist on this machine. An HDF5/NWB path that names remote storage
      is refused (:func:`~release_platform.staging.require_local`).
    """

    root: Optional[str] = None
    endpoint_url: Optional[str] = None

    def _remote(self) -> RemoteRoot:
        remote = remote_storage(self.root, endpoint_url=self.endpoint_url)
        if remote is None:
            raise dg.DagsterInvariantViolationError("StagingIOManager needs an object-storage root (s3://...)")
        return remote

    @staticmethod
    def _rel(asset_key: dg.AssetKey, partition_key: Optional[str]) -> str:
        return f"{IO_DIR}/{'/'.join(asset_key.path)}/{partition_key or '__unpartitioned__'}.pickle"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        remote = self._remote()
        entity = context.partition_key if context.has_partition_key else None
        remote.sync_written(entity=entity)
        for p in paths_in(obj):  # files the value names outside the directories the step registered
            if remote.rel(p) is not None and Path(p).exists():
                remote.sync_out(p, entity=entity)
        rel = self._rel(context.asset_key, context.partition_key if context.has_partition_key else None)
        with atomic_path(remote.local(rel)) as tmp, open(tmp, "wb") as fh:
            pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        remote.upload(rel)

    def load_input(self, context: dg.InputContext) -> Any:
        remote = self._remote()
        asset_key = context.asset_key
        if context.has_asset_partitions:
            keys = list(context.asset_partition_keys)
            values = {k: self._load_one(remote, asset_key, k) for k in keys}
            return values[keys[0]] if len(keys) == 1 and context.has_partition_key else values
        return self._load_one(remote, asset_key, None)

    def _load_one(self, remote: RemoteRoot, asset_key: dg.AssetKey, partition_key: Optional[str]) -> Any:
        rel = self._rel(asset_key, partition_key)
        path = remote.stage_in(rel, required=True, entity=partition_key)
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
        for p in paths_in(obj, urls=True):  # an HDF5/NWB file handed down as a URL would be read over the network
            if p.lower().endswith(HDF5_SUFFIXES):
                require_local(p, what=f"{asset_key.to_user_string()} file", entity=partition_key)
        remote.stage_paths(paths_in(obj), entity=partition_key)
        return obj


def storage_resources() -> dict:
    """The storage resources for the configured root: the storage resource, plus :class:`StagingIOManager` as the
    default IO manager when the root is on object storage."""
    resources: dict = {"storage": StorageResource()}
    if remote_storage() is not None:
        resources["io_manager"] = StagingIOManager()
    return resources
