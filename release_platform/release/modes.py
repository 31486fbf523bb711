"""The one parser of file modes given by users (``release --mode``, the release assets' ``file_mode``, the copy
utility's ``chmod``).

A mode is written in octal digits, as for ``chmod``: the text ``"644"`` / ``"0644"`` / ``"0o644"``, or the JSON
number ``644`` (AllenSDK input files give ``"chmod": 775``; the digits are read as octal, never as the decimal
number 775 = octal 1407). Refused, with one message:

* anything that is not 3 or 4 octal digits, or a value above 777 — setuid, setgid and the sticky bit have no
  meaning on a released file;
* a mode without owner read (the copy could not be verified or re-released);
* group or other **write** (a world- or group-writable release can be changed by anyone) unless the caller
  passes ``allow_group_write=True`` (``--allow-group-write``, ``allow_group_write: true``).

:func:`directory_mode` is the mode of a directory created for files of a given mode: the same bits plus search
(``x``) wherever read is granted.
"""

from __future__ import annotations

import re
from typing import Union

from release_platform.errors import InputError

_DIGITS = re.compile(r"^(?:0o|0)?([0-7]{3,4})$")
GROUP_OTHER_WRITE = 0o022


def parse_mode(value: Union[str, int], *, allow_group_write: bool = False, what: str = "mode") -> int:
    """The file mode ``value`` names (octal digits, see the module docstring); InputError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{what} {value!r} is not a file mode in octal digits (e.g. 644)")
    text = str(value).strip().lower()
    m = _DIGITS.match(text)
    if m is None:
        raise InputError(f"{what} {value!r} is not a file mode in octal digits (e.g. 644)")
    mode = int(m.group(1), 8)
    shown = f"{mode:03o}"
    if mode > 0o777:
        raise InputError(f"{what} {shown} sets setuid, setgid or sticky bits; a released file's mode is at most 777")
    if not mode & 0o400:
        raise InputError(f"{what} {shown} does not let the owner read the file")
    if mode & GROUP_OTHER_WRITE and not allow_group_write:
        raise InputError(f"{what} {shown} lets group or others write the file; refused unless group/other write "
                         "is asked for explicitly (--allow-group-write, allow_group_write: true)")
    return mode


def directory_mode(file_mode: int) -> int:
    """A directory's mode for files of ``file_mode``: the same bits plus search wherever read is granted."""
    return file_mode | ((file_mode & 0o444) >> 2)


__all__ = ["GROUP_OTHER_WRITE", "directory_mode", "parse_mode"]
