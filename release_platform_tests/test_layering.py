"""The house rules on imports: science packages never import Dagster, the standalone runners or the asset layer.

Checked on every ``import`` statement of every module (lazy ones inside functions included), directly and
through any chain of the package's own modules (a science module importing a shared top-level module that
imports Dagster breaks the rule too).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import release_platform

PACKAGE = Path(release_platform.__file__).parent
SCIENCE = ("ophys", "ecephys", "icephys", "stimulus", "behavior", "sync", "nwb", "metadata", "release", "qc", "lims")
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


@functools.lru_cache(maxsize=None)
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


def _package_graph() -> dict[str, set[str]]:
    """Module -> the names it imports (package modules resolved to the longest existing module name)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str:
        while name and name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    return {m: {resolve(n) if n.startswith("release_platform") else n for n in _imports(p)} for m, p in modules.items()}


def test_no_science_module_reaches_dagster_through_the_package():
    graph = _package_graph()
    allowed = {_module_name(PACKAGE.parent / a) for a in ALLOWED}
    bad = {}
    for start in (_module_name(p) for p in _science_files()):
        seen, todo, parent = {start}, [start], {start: None}
        while todo:
            mod = todo.pop()
            for name in graph.get(mod, ()):
                if _forbidden(name):
                    chain, at = [name], mod
                    while at:
                        chain.append(at)
                        at = parent[at]
                    bad[start] = " <- ".join(chain)
                    todo = []
                    break
                if name in graph and name not in seen and name not in allowed:
                    seen.add(name)
                    parent[name] = mod
                    todo.append(name)
    assert bad == {}
