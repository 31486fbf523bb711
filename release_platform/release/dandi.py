"""DANDI side of a ``dandi`` release: ``dandiset.yaml``, the modalities ``dandi organize`` puts in file names, and
``dandi validate`` when the optional ``dandi`` package is installed (``pip install 'release_platform[dandi]'``).

* :func:`dandiset_metadata` turns a LIMS project record (:meth:`~release_platform.lims.client.LimsClient.project`)
  into the ``dandiset.yaml`` fields ``dandi validate`` requires (``identifier``, ``name``, ``description``) plus
  ``license``, ``contributor`` and ``keywords``; :func:`dandiset_yaml` serialises them.
* :func:`nwb_modalities`: ``dandi organize`` names a file ``..._<modality>[+<modality>].nwb`` from the neurodata
  types of the groups in the file, each mapped to the PyNWB module that defines it (``ecephys``, ``ophys``,
  ``behavior``, ``icephys``, ``image``, ``ogen``, ...; ``base``, ``device``, ``file``, ``misc`` and extension types
  are left out), sorted and joined with ``+``.
* :func:`run_dandi_validate` runs ``dandi validate`` on a dandiset directory and returns its errors, or None when
  the package is not installed.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Mapping, Optional

from release_platform.errors import InputError

DANDISET_FILE = "dandiset.yaml"
DEFAULT_LICENSE = "spdx:CC-BY-4.0"
#: Modalities ``dandi organize`` never puts in a name.
_TRIVIAL_MODALITIES = frozenset({"base", "device", "file", "misc"})


def dandiset_metadata(project: Mapping[str, Any]) -> dict[str, Any]:
    """``dandiset.yaml`` fields from a LIMS project record; InputError naming the project and every missing field."""
    code = project.get("code") or "?"
    missing = [f for f in ("dandiset_identifier", "name", "description") if not str(project.get(f) or "").strip()]
    if missing:
        raise InputError(f"project {code!r} lacks {', '.join(missing)} in LIMS, needed for dandiset.yaml "
                         "(set them with LimsClient.set_project_metadata)")
    identifier = str(project["dandiset_identifier"]).strip()
    if identifier.upper().startswith("DANDI:"):
        identifier = identifier[6:]
    if not (identifier.isdigit() and len(identifier) == 6):
        raise InputError(f"project {code!r}: dandiset_identifier {project['dandiset_identifier']!r} is not a "
                         "six-digit DANDI number")
    license_ = str(project.get("license") or DEFAULT_LICENSE)
    if not license_.startswith("spdx:"):
        license_ = f"spdx:{license_}"
    contributors = []
    for person in project.get("contributors") or []:
        if not isinstance(person, Mapping) or not person.get("name"):
            raise InputError(f"project {code!r}: a contributor needs a 'name' (\"Last, First\"), got {person!r}")
        entry: dict[str, Any] = {"schemaKey": "Person", "name": str(person["name"]),
                                 "roleName": [r if str(r).startswith("dcite:") else f"dcite:{r}"
                                              for r in person.get("roles") or ["Author"]],
                                 "includeInCitation": True}
        for source, target in (("email", "email"), ("orcid", "identifier")):
            if person.get(source):
                entry[target] = str(person[source])
        if person.get("affiliation"):
            entry["affiliation"] = [{"schemaKey": "Affiliation", "name": str(person["affiliation"])}]
        contributors.append(entry)
    meta: dict[str, Any] = {
        "identifier": f"DANDI:{identifier}",
        "name": str(project["name"]).strip(),
        "description": str(project["description"]).strip(),
        "license": [license_],
    }
    if contributors:
        meta["contributor"] = contributors
    if project.get("keywords"):
        meta["keywords"] = [str(k) for k in project["keywords"]]
    return meta


def dandiset_from_lims(client: Any, code: str) -> tuple[Optional[dict[str, Any]], str]:
    """(dandiset.yaml fields, "") for a LIMS project whose publication fields are complete, else (None, why not)."""
    try:
        return dandiset_metadata(client.project(code)), ""
    except InputError as exc:
        return None, exc.problem


def dandiset_yaml(meta: Mapping[str, Any]) -> bytes:
    import yaml

    return yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True).encode("utf-8")


@functools.lru_cache(maxsize=1)
def _modality_of_type() -> dict[str, str]:
    """Neurodata type name -> the PyNWB module defining it (``pynwb.ecephys`` -> ``ecephys``)."""
    import pynwb
    from pynwb.core import NWBMixin

    out: dict[str, str] = {}
    for value in vars(pynwb).values():
        if not inspect.ismodule(value) or not value.__name__.startswith("pynwb."):
            continue
        for cls in vars(value).values():
            if inspect.isclass(cls) and issubclass(cls, NWBMixin):
                parts = cls.__module__.split(".")
                if len(parts) == 2:
                    out.setdefault(cls.__name__, parts[1])
    return out


def nwb_modalities(path: str | os.PathLike) -> tuple[str, ...]:
    """The modalities ``dandi organize`` derives from an NWB file's group neurodata types (sorted)."""
    import h5py

    types: set[str] = set()

    def visit(_name, obj):
        if isinstance(obj, h5py.Group):
            value = obj.attrs.get("neurodata_type")
            if value is not None:
                types.add(value.decode() if isinstance(value, bytes) else str(value))

    try:
        with h5py.File(path, "r") as handle:
            visit("", handle)
            handle.visititems(visit)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the NWB file to name it: {exc}", path=path) from None
    mapping = _modality_of_type()
    modalities = {mapping[t] for t in types if t in mapping} - _TRIVIAL_MODALITIES
    return tuple(sorted(modalities))


# --- dandi organize names --------------------------------------------------------------------------------------

#: The name fields of ``dandi organize`` in order: (record key, format, kind). ``additional`` fields appear only
#: when the files of the set differ in them, ``disambiguation`` ones only to tell apart files that would
#: otherwise share a name (tried in this order), ``required_if_not_empty`` whenever set.
ORGANIZE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("subject_id", "sub-{}", "required"),
    ("session_id", "_ses-{}", "additional"),
    ("tissue_sample_id", "_tis-{}", "additional"),
    ("slice_id", "_slice-{}", "additional"),
    ("cell_id", "_cell-{}", "additional"),
    ("description", "_desc-{}", "disambiguation"),
    ("probe_ids", "_probe-{}", "disambiguation"),
    ("obj_id", "_obj-{}", "disambiguation"),
    ("modalities", "_{}", "required_if_not_empty"),
    ("extension", "{}", "required"),
)


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _undefined(value: Any) -> bool:
    return value is None or (hasattr(value, "__len__") and not len(value))


def organize_label(value: Any, field: str = "") -> str:
    """A value as ``dandi organize`` writes it in a name: ``_*\\/<>:|"'?%@;,`` and whitespace become ``-``, and
    ``.`` too except in the extension."""
    text = re.sub(r"[_*\\/<>:|\"'?%@;,\s]", "-", str(value))
    return text if field == "extension" else text.replace(".", "-")


def short_object_id(object_id: str) -> str:
    """``dandi organize``'s ``obj`` label: the CRC-32 of the file's ``object_id`` in base 36."""
    value = zlib.crc32(object_id.encode("ascii"))
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, rem = divmod(value, 36)
        out = digits[rem] + out
        if value == 0:
            return out


def nwb_organize_record(path: str | os.PathLike) -> dict[str, Any]:
    """What ``dandi organize`` names a file by, read from the NWB file: subject and session ids, the probe ids of
    devices that carry one, the file's object id and its modalities. InputError if unreadable or without a
    subject id."""
    import h5py

    def text(handle, name):
        if name not in handle:
            return None
        value = handle[name][()]
        value = value.decode() if isinstance(value, bytes) else str(value)
        return value.strip() or None

    try:
        with h5py.File(path, "r") as handle:
            subject = text(handle, "general/subject/subject_id")
            session = text(handle, "general/session_id")
            object_id = handle.attrs.get("object_id")
            probes = []
            for device in (handle["general/devices"].values() if "general/devices" in handle else []):
                if "probe_id" in device.attrs:
                    probes.append(int(device.attrs["probe_id"]))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read the NWB file to name it: {exc}", path=path) from None
    if subject is None:
        raise InputError("the NWB file has no subject id (general/subject/subject_id); dandi organize needs one",
                         path=path)
    return {
        "path": os.fspath(path), "subject_id": organize_label(subject, "subject_id"),
        "session_id": None if session is None else organize_label(session, "session_id"),
        "probe_ids": probes, "object_id": None if object_id is None else str(object_id),
        "modalities": nwb_modalities(path), "extension": os.path.splitext(os.fspath(path))[1],
    }


def organize_names(records: list[Mapping[str, Any]]) -> list[str]:
    """The ``sub-<subject>/<file name>`` paths ``dandi organize`` gives a set of files (one record per file, as
    :func:`nwb_organize_record` returns). InputError when even the object ids cannot make the names unique."""
    recs = [dict(r) for r in records]
    for r in recs:
        r.setdefault("_required", set())

    def assign():
        unique = {key: {_hashable(r.get(key)) for r in recs} for key, _, _ in ORGANIZE_FIELDS}
        for r in recs:
            name = ""
            for key, fmt, kind in ORGANIZE_FIELDS:
                if (kind in ("required", "required_if_not_empty") or (kind == "additional" and len(unique[key]) > 1)
                        or key in r["_required"]):
                    value = r.get(key)
                    if _undefined(value):
                        continue
                    if isinstance(value, (list, tuple)):
                        value = "+".join(map(str, value))
                    name += fmt.format(organize_label(value, key))
            r["dandi_path"] = f"sub-{r['subject_id']}/{name}"

    def clashes() -> dict[str, list[dict]]:
        groups: dict[str, list[dict]] = {}
        for r in recs:
            groups.setdefault(r["dandi_path"], []).append(r)
        return {p: g for p, g in groups.items() if len(g) > 1}

    assign()
    for key, _, kind in ORGANIZE_FIELDS:
        non_unique = clashes()
        if not non_unique:
            break
        if kind != "disambiguation":
            continue
        if key == "obj_id":
            for group in non_unique.values():
                for r in group:
                    if not r.get("object_id"):
                        raise InputError("files would share a DANDI name and have no object_id to tell them apart",
                                         path=r["path"])
                    r["obj_id"] = short_object_id(r["object_id"])
        for path, group in non_unique.items():
            if {_hashable(r.get(key)) for r in group if not _undefined(r.get(key))}:
                for r in recs:
                    if r["dandi_path"] == path:
                        r["_required"].add(key)
            assign()
    left = clashes()
    if left:
        raise InputError(f"{len(left)} DANDI names are not unique even with object ids: {sorted(left)[:5]}")
    return [r["dandi_path"] for r in recs]


def dandi_available() -> bool:
    try:
        import dandi  # noqa: F401
    except ImportError:
        return False
    return True


def run_dandi_validate(dandiset_dir: str | os.PathLike, *, timeout_s: float = 1800) -> Optional[list[str]]:
    """``dandi validate`` on a dandiset directory: its error lines (empty when clean), or None when the ``dandi``
    package is not installed. Runs the ``dandi`` command in a child process, errors and critical results only."""
    if not dandi_available():
        return None
    env = dict(os.environ, DANDI_CACHE="ignore", DANDI_NO_ET="1")
    done = subprocess.run(
        [sys.executable, "-c", "from dandi.cli.command import main; main(prog_name='dandi')", "validate",
         "--min-severity", "ERROR", "--format", "json_lines", str(Path(dandiset_dir))],
        capture_output=True, text=True, timeout=timeout_s, env=env,
    )
    problems = []
    for line in done.stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and str(record.get("severity", "")).upper() in ("ERROR", "CRITICAL"):
            where = record.get("path") or record.get("dandiset_path") or ""
            problems.append(f"{record.get('id', '?')}: {where}: {record.get('message', '')}".strip())
    if done.returncode != 0 and not problems:
        tail = [ln for ln in (done.stdout + "\n" + done.stderr).splitlines() if ln.strip()][-5:]
        problems.append(f"dandi validate exited {done.returncode}: " + " | ".join(tail))
    return problems


__all__ = ["DANDISET_FILE", "ORGANIZE_FIELDS", "dandi_available", "dandiset_from_lims", "dandiset_metadata", "dandiset_yaml",
           "nwb_modalities", "nwb_organize_record", "organize_label", "organize_names", "run_dandi_validate",
           "short_object_id"]
