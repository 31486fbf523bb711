"""The house rules on imports: science packages never import Dagster, the standalone runners or the asset layer.

Checked twice: statically (every ``import`` statement of every module, lazy ones inside functions included) and
at run time (importing every science module in a fresh interpreter loads neither Dagster nor those packages,
so no indirect route through a shared top-level module exists either).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import release_platform

PACKAGE = Path(release_platform.__file__).parent
SCIENCE = ("ophys", "ecephys", "icephys", "stimulus", "nwb", "metadata", "release", "qc", "lims")
FORBIDDEN = ("dagster", "dagster_", "release_platform.modules", "release_platform.assets", "release_platform.definitions",
             "release_platform.execution", "release_platform.dagster_home")
#: The LIMS's Dagster resource (``LimsResource``) is the one Dagster-aware module of a science package.
ALLOWED = {"release_platform/lims/resource.py"}


def _science_files() -> list[Path]:
    return sorted(p for pkg in SCIENCE for p in (PACKAGE / pkg).rglob("*.py")
                  if p.relative_to(PACKAGE.parent).as_posix() not in ALLOWED)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") or (f.endswith("_") and name.startswith(f)) for f in FORBIDDEN)


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_the_rule_sees_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import dagster as dg\n    from release_platform import assets\n")
    assert [n for n in _imports(bad) if _forbidden(n)] == ["dagster", "release_platform.assets"]
    assert not _forbidden("release_platform.metadata") and _forbidden("dagster_pandera")


def test_science_packages_import_no_dagster_runner_or_asset_module_statically():
    files = _science_files()
    assert len(files) > 50
    offenders = {p.relative_to(PACKAGE.parent).as_posix(): bad for p in files if (bad := [n for n in _imports(p) if _forbidden(n)])}
    assert offenders == {}


def test_importing_every_science_module_loads_no_dagster():
    modules = [_module_name(p) for p in _science_files()]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster' or m.startswith({FORBIDDEN[2:]!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
