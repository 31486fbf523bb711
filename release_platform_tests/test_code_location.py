"""Loading the code location is cheap: it imports Dagster and the platform's wiring, not the science libraries,
which the steps import where they use them; and its one-machine executor forks step processes from a server
that preloaded the code location."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg

#: Libraries a step may need but loading the code location must not import.
HEAVY = ("numba", "scipy", "pandas", "pandera", "pyarrow", "pynwb", "hdmf", "h5py", "nwbinspector", "matplotlib",
         "PIL", "sqlalchemy", "llvmlite")


def test_loading_the_code_location_imports_no_science_library():
    code = ("import json, sys\nimport release_platform.definitions as d\nd.defs.get_repository_def()\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_graph_constants_equal_the_table_specs_they_stand_for():
    from release_platform.assets import metadata as assets_metadata
    from release_platform.assets.stimulus import StimulusConfig
    from release_platform.metadata.schemas import TABLES
    from release_platform.stimulus.lsn import DEFAULT_SHUFFLES

    releases = assets_metadata.RELEASE_ASSETS
    assert assets_metadata.TABLE_PARENTS == {t: tuple(sorted({r.parent for r in TABLES[t].references})) for t in releases}
    assert assets_metadata.TABLES_WITH_FILES == tuple(t for t, s in TABLES.items() if s.file_kind and t in releases)
    assert StimulusConfig().n_shuffles == DEFAULT_SHUFFLES


def test_lazy_package_names_resolve_to_their_submodules():
    import importlib

    import release_platform.lims as lims
    import release_platform.metadata as metadata
    from release_platform.lims import client

    modules = {name: importlib.import_module(f"release_platform.metadata.{name}")
               for name in ("builders", "files", "gather", "schemas", "validation")}
    # the submodule gather is imported: the package's name gather is still the function
    assert metadata.gather is modules["gather"].gather and callable(metadata.gather)
    assert sorted(metadata.__all__) == sorted(metadata._SUBMODULE)
    for name, submodule in metadata._SUBMODULE.items():
        assert getattr(metadata, name) is getattr(modules[submodule], name)
    for name in lims.__all__:
        assert getattr(lims, name) is getattr(client, name)
    for package in (lims, metadata):
        try:
            package.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError(f"{package.__name__}.no_such_name resolved")


def test_step_processes_start_from_a_preloaded_fork_server(monkeypatch):
    from release_platform import execution

    monkeypatch.delenv(execution.EXECUTOR_ENV, raising=False)
    executor = execution.select_executor()
    assert executor.name == "multiprocess"
    config = execution.multiprocess_executor_config()
    preload = config["start_method"]["forkserver"]["preload_modules"]
    assert preload[0] == "release_platform.definitions" and len(preload) == len(set(preload))
    for module in preload:  # every preloaded module exists (the fork server would skip a missing one silently)
        __import__(module)
    # the configuration is valid for Dagster's multiprocess executor
    assert dg.multiprocess_executor.configured(config).config_schema is not None
    monkeypatch.setenv(execution.EXECUTOR_ENV, "celery")
    assert execution.select_executor().name == "release_platform_celery"  # the Celery path is unchanged
