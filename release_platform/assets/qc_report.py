"""QC pictures per session partition: one ``<kind>_qc_report`` asset per session kind.

Each draws the session's QC figures from what the pipeline wrote (:mod:`release_platform.qc.session_figures`), under
``<storage>/<kind>_qc_report/<key>/`` (per imaging plane / probe in sub-directories), assembles them into one
self-contained page ``qc_report.html`` and an index ``qc_report.json`` (figure names, files, captions; what
``release-platform report`` reads), and attaches thumbnails to the materialization as a Markdown metadata value
(``qc_figures``) with the PNGs embedded as ``data:`` URIs: the Dagster UI shows the pictures themselves on the
asset's page and in the partition's materialization event.
"""

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import dagster as dg

from release_platform.assets.failures import partition_failure
from release_platform.assets.partitions import PARTITIONS_BY_KIND
from release_platform.assets.resources import StorageResource
from release_platform.atomic import atomic_path
from release_platform.errors import InputError
from release_platform.inputs import IcephysCellInputs
from release_platform.metadata.files import DataFiles

if TYPE_CHECKING:  # drawing (matplotlib) is imported by the steps that draw
    from release_platform.qc.figures import Picture

REPORT_FILE = "qc_report.html"
INDEX_FILE = "qc_report.json"


def qc_asset_name(kind: str) -> str:
    return f"{kind}_qc_report"


def write_index(directory: Path, kind: str, key: str, groups: Mapping[str, Sequence["Picture"]]) -> Path:
    """``qc_report.json``: kind, session, and per group the figures (name, file relative to ``directory``, caption)."""
    index = {"kind": kind, "session": key, "groups": {
        g: [{"name": p.name, "file": str(p.path.relative_to(directory)), "caption": p.caption, "width": p.width,
             "height": p.height} for p in pics] for g, pics in groups.items()}}
    target = directory / INDEX_FILE
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    return target


def write_pages(directory: Path, kind: str, key: str, groups: Mapping[str, Sequence["Picture"]]) -> tuple[Path, Path]:
    """The session's QC page (``qc_report.html``, figures embedded) and index (``qc_report.json``)."""
    from release_platform.qc import report

    body = "".join(report.figure_section(g or f"{kind} {key}", pics) for g, pics in groups.items())
    page = report.write_html_page(directory / REPORT_FILE, f"QC: {kind} {key}", body)
    return page, write_index(directory, kind, key, groups)


def qc_metadata(groups: Mapping[str, Sequence["Picture"]], page: Path) -> dict:
    """Materialization metadata: ``qc_figures``, the thumbnails as Markdown with embedded ``data:`` PNGs (the Dagster
    UI renders it, behind "[Show Markdown]", on the asset's page and in the partition's event), ``report`` (the page)
    and ``figures`` (how many)."""
    from release_platform.qc import report

    return {
        "qc_figures": dg.MetadataValue.md(report.thumbnails_markdown(groups)),
        "report": dg.MetadataValue.path(str(page)),
        "figures": sum(len(p) for p in groups.values()),
    }


def _publish(context: dg.AssetExecutionContext, kind: str, directory: Path, groups: dict[str, list["Picture"]], started: float) -> dict:
    page, index = write_pages(directory, kind, context.partition_key, groups)
    context.add_output_metadata({**qc_metadata(groups, page), "runtime_s": round(time.monotonic() - started, 3)})
    return {"report": str(page), "index": str(index), "figures": {g: [str(p.path) for p in pics] for g, pics in groups.items()}}


def _fail(context, kind: str, exc: Exception) -> dg.Failure:
    problem = exc if isinstance(exc, InputError) else f"{kind} {context.partition_key}: QC figures: {exc}"
    return partition_failure(context, problem, kind)


def _paths(files: DataFiles) -> dict[str, str]:
    """The files an NWB asset reports it wrote, by entity id (as str)."""
    return {str(k): str(v) for k, v in files.paths.items()}


def _only_path(files: DataFiles, context) -> str:
    paths = _paths(files)
    if len(paths) != 1:
        raise InputError(f"expected one {files.kind} file for partition {context.partition_key}, got {len(paths)}")
    return next(iter(paths.values()))


DESCRIPTION = "QC figures of the session as thumbnails in the metadata and one HTML page ({})."


def _report(context: dg.AssetExecutionContext, kind: str, storage: StorageResource,
            figures_of: Callable[[Path, str], dict[str, list["Picture"]]]) -> dict:
    """One session's QC report: ``figures_of(directory, label)`` draws the figure groups under the partition's
    directory; bad or unreadable input fails the partition with one message."""
    started = time.monotonic()
    directory = storage.dir_for(qc_asset_name(kind), context.partition_key)
    try:
        groups = figures_of(directory, f"{kind} {context.partition_key}")
    except (InputError, ValueError, KeyError, OSError) as exc:
        raise _fail(context, kind, exc) from None
    return _publish(context, kind, directory, groups, started)


@dg.asset(partitions_def=PARTITIONS_BY_KIND["ophys_session"], group_name="ophys_session", kinds={"html", "png"},
          description=DESCRIPTION.format("per plane: ROI contours, traces of the brightest and most-flagged ROIs, r and "
                                         "sigma(dF/F), motion offsets, tuning curves and receptive fields"))
def ophys_session_qc_report(context: dg.AssetExecutionContext, behavior_ophys_nwb: DataFiles, dff_traces: dict,
                            stimulus_responses: dict, storage: StorageResource) -> dict:
    def figures_of(directory: Path, _label: str) -> dict[str, list["Picture"]]:
        from release_platform.qc import session_figures

        return {f"ophys_experiment {pid}": session_figures.ophys_plane_figures(
                    nwb_path, directory / pid, dff_path=dff_traces.get(pid, {}).get("file"),
                    analysis_path=stimulus_responses.get(pid, {}).get("file"), label=f"ophys_experiment {pid}")
                for pid, nwb_path in sorted(_paths(behavior_ophys_nwb).items())}

    return _report(context, "ophys_session", storage, figures_of)


@dg.asset(partitions_def=PARTITIONS_BY_KIND["behavior_session"], group_name="behavior_session", kinds={"html", "png"},
          description=DESCRIPTION.format("licks, rewards, running and trial outcomes"))
def behavior_session_qc_report(context: dg.AssetExecutionContext, behavior_nwb: DataFiles, storage: StorageResource) -> dict:
    from release_platform.qc import session_figures

    return _report(context, "behavior_session", storage, lambda directory, label: {
        label: session_figures.behavior_figures(_only_path(behavior_nwb, context), directory, label=label)})


@dg.asset(partitions_def=PARTITIONS_BY_KIND["ecephys_session"], group_name="ecephys_session", kinds={"html", "png"},
          description=DESCRIPTION.format("per probe: firing rate vs depth by quality, spikes around stimulus onsets, mean "
                                         "waveforms, an LFP snippet"))
def ecephys_session_qc_report(context: dg.AssetExecutionContext, ecephys_session_nwb: DataFiles, ecephys_probe_lfp_nwb: DataFiles,
                              storage: StorageResource) -> dict:
    from release_platform.qc import session_figures

    return _report(context, "ecephys_session", storage, lambda directory, label: {
        label: session_figures.ecephys_figures(_only_path(ecephys_session_nwb, context), directory,
                                               lfp_paths=_paths(ecephys_probe_lfp_nwb), label=label)})


@dg.asset(partitions_def=PARTITIONS_BY_KIND["icephys_cell"], group_name="icephys_cell", kinds={"html", "png"},
          description=DESCRIPTION.format("current-clamp sweeps by stimulus type and the f-I curve"))
def icephys_cell_qc_report(context: dg.AssetExecutionContext, icephys_cell_inputs: IcephysCellInputs, icephys_sweep_table: dict,
                           storage: StorageResource) -> dict:
    from release_platform.metadata.io import read_parquet
    from release_platform.qc import session_figures

    return _report(context, "icephys_cell", storage, lambda directory, label: {
        label: session_figures.icephys_figures(icephys_cell_inputs.nwb_path,
                                               read_parquet("icephys_sweep_table", icephys_sweep_table["file"]),
                                               directory, label=label)})


QC_REPORT_ASSETS = [ophys_session_qc_report, behavior_session_qc_report, ecephys_session_qc_report, icephys_cell_qc_report]
