"""Public data release: layouts, one-read digests, verified copy, manifest, changelog, verify.

Science code: no Dagster. The pieces:

* :mod:`~release_platform.release.digests` — SHA-256, BLAKE2b (AllenSDK ``file_hash``) and the DANDI etag in
  one read (:func:`digest_file`, :class:`MultiDigest`);
* :mod:`~release_platform.release.paths` — path safety: no ``..``, sources confined to their roots, writes under
  a root through directory descriptors that never follow a symlink (:class:`SafeRoot`);
* :mod:`~release_platform.release.copy` — verified, resumable, parallel copy with a ledger (:func:`copy_files`);
* :mod:`~release_platform.release.layouts` — the ``allen`` and ``dandi`` layouts and the DANDI filename rules;
* :mod:`~release_platform.release.manifest` — the AllenSDK cloud-cache manifest (+ size, sha256, dandi-etag);
* :mod:`~release_platform.release.changelog` — :func:`compare_manifests`;
* :mod:`~release_platform.release.verify` — :func:`verify_release`;
* :mod:`~release_platform.release.build` — :func:`make_release`, :func:`stage_files`;
* :mod:`~release_platform.release.commands` — the ``release``, ``verify`` and ``changelog`` CLI subcommands.
"""

from __future__ import annotations

import importlib

# name -> defining module, imported on first use: `import release_platform.release` (and the CLI) stays light
_EXPORTS = {
    "AllenLayout": "release_platform.release.layouts",
    "Changelog": "release_platform.release.changelog",
    "CopyEntry": "release_platform.release.copy",
    "CopyRecord": "release_platform.release.copy",
    "CopyReport": "release_platform.release.copy",
    "DandiLayout": "release_platform.release.layouts",
    "Digests": "release_platform.release.digests",
    "FILE_ROLES": "release_platform.release.layouts",
    "LAYOUTS": "release_platform.release.layouts",
    "Ledger": "release_platform.release.copy",
    "MultiDigest": "release_platform.release.digests",
    "Problem": "release_platform.release.verify",
    "ReleaseItem": "release_platform.release.layouts",
    "ReleaseResult": "release_platform.release.build",
    "SafeRoot": "release_platform.release.paths",
    "StagedFile": "release_platform.release.build",
    "VerifyReport": "release_platform.release.verify",
    "build_manifest": "release_platform.release.manifest",
    "check_source": "release_platform.release.paths",
    "compare_manifests": "release_platform.release.changelog",
    "compare_trees": "release_platform.release.copy",
    "copy_files": "release_platform.release.copy",
    "dandi_label": "release_platform.release.layouts",
    "dandi_path_problems": "release_platform.release.layouts",
    "digest_bytes": "release_platform.release.digests",
    "digest_file": "release_platform.release.digests",
    "discover_tables": "release_platform.release.build",
    "get_layout": "release_platform.release.layouts",
    "load_manifest": "release_platform.release.manifest",
    "load_tables": "release_platform.release.build",
    "local_path": "release_platform.release.manifest",
    "make_release": "release_platform.release.build",
    "manifest_bytes": "release_platform.release.manifest",
    "manifest_filename": "release_platform.release.manifest",
    "parse_semver": "release_platform.release.manifest",
    "read_staged": "release_platform.release.build",
    "release_items": "release_platform.release.build",
    "stage_files": "release_platform.release.build",
    "tree_entries": "release_platform.release.copy",
    "validate_manifest": "release_platform.release.manifest",
    "verify_release": "release_platform.release.verify",
    "version_from_filename": "release_platform.release.manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
