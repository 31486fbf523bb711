"""QC pictures: one small function per figure, each drawing arrays into a PNG written atomically.

Every function takes plain arrays or frames and the PNG's path, draws with matplotlib's object API on the Agg
canvas (no display, no pyplot state, safe in worker processes), writes ``<path>`` with the atomic protocol
(:func:`release_platform.atomic.atomic_path`: a temporary name unique to the writer, fsync, rename) and returns
a :class:`Picture` (path, pixel size, what was drawn). Sizes are fixed per figure (``FIGSIZE`` inches at
``DPI``), so a figure's pixel size is known in advance.

Figures:

* ophys plane: :func:`roi_contours` (valid ROIs in green, excluded in red, on the average projection),
  :func:`roi_traces` (raw, neuropil, demixed, corrected and dF/F of chosen ROIs on one time axis; chosen by
  :func:`brightest_and_flagged`), :func:`ratio_and_noise_histograms` (r and sigma of dF/F),
  :func:`motion_offsets`;
* stimulus analysis: :func:`tuning_curves` (most selective cells), :func:`receptive_fields` (ON/OFF maps);
* ecephys: :func:`firing_rate_vs_depth` (coloured by unit quality), :func:`spike_raster` (units around
  stimulus onsets), :func:`mean_waveforms`, :func:`lfp_snippet`;
* behavior: :func:`behavior_timeline` (licks, rewards, running), :func:`trial_outcomes`;
* icephys: :func:`sweeps_by_stimulus_type`, :func:`fi_curve`.

Reading the pipeline's files into these arrays is :mod:`release_platform.qc.session_figures`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from release_platform.atomic import atomic_path

__all__ = [
    "DPI",
    "FIGSIZE",
    "VALID_COLOR",
    "EXCLUDED_COLOR",
    "Picture",
    "roi_contours",
    "brightest_and_flagged",
    "roi_traces",
    "ratio_and_noise_histograms",
    "motion_offsets",
    "tuning_curves",
    "receptive_fields",
    "firing_rate_vs_depth",
    "spike_raster",
    "mean_waveforms",
    "lfp_snippet",
    "behavior_timeline",
    "trial_outcomes",
    "sweeps_by_stimulus_type",
    "fi_curve",
]

DPI = 100
#: Inches (width, height) per figure; pixels are these times :data:`DPI`.
FIGSIZE: dict[str, tuple[float, float]] = {
    "roi_contours": (7.0, 7.0),
    "roi_traces": (10.0, 12.0),
    "ratio_and_noise_histograms": (9.0, 3.6),
    "motion_offsets": (9.0, 3.2),
    "tuning_curves": (10.0, 4.0),
    "receptive_fields": (10.0, 4.0),
    "firing_rate_vs_depth": (5.0, 7.0),
    "spike_raster": (9.0, 6.0),
    "mean_waveforms": (10.0, 4.0),
    "lfp_snippet": (9.0, 6.0),
    "behavior_timeline": (10.0, 5.0),
    "trial_outcomes": (6.0, 4.0),
    "sweeps_by_stimulus_type": (10.0, 7.0),
    "fi_curve": (5.0, 4.0),
}
#: Contour colours of :func:`roi_contours`: pure colours, never produced by the grey image under them.
VALID_COLOR = "#00ff00"
EXCLUDED_COLOR = "#ff0000"
QUALITY_COLORS = {"good": "#1b9e77", "mua": "#d95f02", "noise": "#7570b3"}
TRACE_COLORS = {"roi": "#1f77b4", "neuropil": "#7f7f7f", "demixed": "#9467bd", "neuropil_corrected": "#2ca02c", "dff": "#d62728"}
MAX_POINTS = 4000  # points per drawn line: longer series are decimated (the figure is ~1000 px wide)


@dataclasses.dataclass(frozen=True)
class Picture:
    """A written PNG: ``name`` (the figure function), ``path``, size in pixels, ``items`` drawn (ROIs, units, sweeps...)
    and a one-line ``caption``."""

    name: str
    path: Path
    width: int
    height: int
    items: int
    caption: str


def _figure(name: str) -> Figure:
    fig = Figure(figsize=FIGSIZE[name], dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, name: str, path: str | os.PathLike, items: int, caption: str) -> Picture:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    w, h = (int(round(v * DPI)) for v in FIGSIZE[name])
    return Picture(name=name, path=path, width=w, height=h, items=items, caption=caption)


def warm_figures() -> None:
    """Draw one figure (a title, tick labels, a line, event ticks, bars) into memory and throw it away: the
    first figure of a process loads the font, builds the text-layout and glyph caches and imports the PNG encoder
    (0.2-0.4 s), so a process that calls this once, e.g. a fork server before it forks step processes, passes them on.
    Writes no file."""
    import io

    fig = _figure("trial_outcomes")
    line_ax, bar_ax = fig.subplots(1, 2)
    line_ax.plot([0.0, 1.0, 2.0], [0.0, 1.0, 0.5], lw=0.5)
    line_ax.eventplot([[0.5, 1.5]], lineoffsets=[0.2], linelengths=0.1, linewidths=0.6)
    bar_ax.bar_label(bar_ax.bar([0, 1], [3, 1]), fontsize=7)
    bar_ax.set_xticks([0, 1], ["a", "b"])
    for ax in (line_ax, bar_ax):
        ax.set_xlabel("x", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("warm", fontsize=10)
    fig.savefig(io.BytesIO(), format="png", dpi=DPI)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def _axis_labels(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def _label_panel(ax, title: str, xlabel: str) -> None:
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.tick_params(labelsize=6)


def _row_of_panels(fig: Figure, axes, ylabel: str, title: str, *, left: float, wspace: float) -> None:
    """Layout of a row of small panels sharing one y label (on the first) and one title."""
    axes[0].set_ylabel(ylabel, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=left, right=0.98, top=0.82, bottom=0.16, wspace=wspace)


def _decimate(x: np.ndarray, *ys: np.ndarray) -> tuple[np.ndarray, ...]:
    step = max(1, int(np.ceil(len(x) / MAX_POINTS)))
    return (x[::step], *(y[..., ::step] for y in ys))


def _display_range(image: np.ndarray) -> tuple[float, float]:
    finite = image[np.isfinite(image)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


# --- ophys -------------------------------------------------------------------------------------------------


def roi_contours(average_projection: np.ndarray, masks: Sequence[tuple[int, int, np.ndarray]], valid: Sequence[bool],
                 path: str | os.PathLike, *, title: str = "") -> Picture:
    """Each ROI's outline on the average projection: valid ROIs in :data:`VALID_COLOR`, excluded ones in
    :data:`EXCLUDED_COLOR`. ``masks``: per ROI ``(x, y, mask)`` with the boolean mask cropped to its bounding
    box at column ``x``, row ``y`` of the image. One closed contour line per ROI (pixel-exact, not antialiased)."""
    image = np.asarray(average_projection, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"average projection must be 2-D, got shape {image.shape}")
    if len(masks) != len(valid):
        raise ValueError(f"{len(masks)} masks but {len(valid)} validity flags")
    fig = _figure("roi_contours")
    ax = fig.add_axes((0.04, 0.04, 0.92, 0.88))
    lo, hi = _display_range(image)
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", origin="upper")
    drawn = 0
    for (x, y, mask), ok in zip(masks, valid):
        m = np.pad(np.asarray(mask, dtype=np.float64), 1)
        if not m.any():
            continue
        xs = np.arange(m.shape[1]) + x - 1
        ys = np.arange(m.shape[0]) + y - 1
        ax.contour(xs, ys, m, levels=[0.5], colors=[VALID_COLOR if ok else EXCLUDED_COLOR], linewidths=1.0,
                   antialiased=False)
        drawn += 1
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    n_valid = int(np.sum(np.asarray(valid, dtype=bool)))
    caption = f"{len(masks)} ROIs: {n_valid} valid (green), {len(masks) - n_valid} excluded (red)"
    fig.suptitle(f"{title}\n{caption}" if title else caption, fontsize=10)
    return _save(fig, "roi_contours", path, drawn, caption)


def brightest_and_flagged(mean_fluorescence: np.ndarray, flags: np.ndarray, valid: np.ndarray,
                          n: int = 5) -> tuple[list[int], list[int]]:
    """Row indices of the ``n`` brightest valid ROIs (highest mean raw fluorescence) and of the ``n`` most-flagged
    ROIs (most flags, brightest first among equals; only ROIs with at least one flag), disjoint."""
    mean_fluorescence = np.asarray(mean_fluorescence, dtype=np.float64)
    flags = np.asarray(flags, dtype=np.int64)
    valid = np.asarray(valid, dtype=bool)
    brightness = np.where(np.isfinite(mean_fluorescence), mean_fluorescence, -np.inf)
    order = np.lexsort((-brightness, ~valid))  # valid first, brightest first
    brightest = [int(i) for i in order if valid[i]][:n]
    flagged_order = np.lexsort((-brightness, -flags))
    flagged = [int(i) for i in flagged_order if flags[i] > 0 and int(i) not in brightest][:n]
    return brightest, flagged


def roi_traces(timestamps: np.ndarray, traces: Mapping[str, np.ndarray], roi_ids: Sequence[str],
               labels: Sequence[str], path: str | os.PathLike, *, title: str = "") -> Picture:
    """One row per chosen ROI on one shared time axis: the fluorescence sets of ``traces`` (name -> ROIs x T:
    ``roi``, ``neuropil``, ``demixed``, ``neuropil_corrected``) on the left axis and ``dff`` on the right axis.
    ``labels``: per ROI why it was chosen (e.g. ``brightest``, ``flagged: not valid``)."""
    t = np.asarray(timestamps, dtype=np.float64)
    n = len(roi_ids)
    fig = _figure("roi_traces")
    if n == 0:
        ax = fig.add_subplot(1, 1, 1)
        _no_data(ax, "no ROIs")
        return _save(fig, "roi_traces", path, 0, "no ROIs")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for row, ax in enumerate(axes):
        if not any(np.isfinite(np.asarray(values[row], dtype=np.float64)).any() for values in traces.values()):
            ax.text(0.5, 0.5, "no finite values (ROI excluded)", ha="center", va="center", transform=ax.transAxes,
                    color="0.3", fontsize=8)
        for name, values in traces.items():
            y = np.asarray(values[row], dtype=np.float64)
            if len(y) != len(t):
                raise ValueError(f"trace set {name!r} has {len(y)} frames, timestamps {len(t)}")
            tx, ty = _decimate(t, y)
            if name == "dff":
                twin = ax.twinx()
                twin.plot(tx, ty, lw=0.6, color=TRACE_COLORS["dff"], label="dF/F")
                twin.tick_params(labelsize=6, colors=TRACE_COLORS["dff"])
            else:
                ax.plot(tx, ty, lw=0.6, color=TRACE_COLORS.get(name, None), label=name)
        ax.tick_params(labelsize=6)
        ax.set_ylabel(f"{roi_ids[row]}\n{labels[row]}", fontsize=6, rotation=0, ha="right", va="center")
    axes[0].legend(loc="upper right", fontsize=6, ncol=len(traces))
    axes[-1].set_xlabel("time (s)", fontsize=8)
    caption = f"{n} ROIs: " + ", ".join(f"{r} ({lab})" for r, lab in zip(roi_ids, labels))
    fig.suptitle(title or "ROI traces (left: fluorescence; right, red: dF/F)", fontsize=10)
    fig.subplots_adjust(left=0.16, right=0.94, top=0.95, bottom=0.04, hspace=0.15)
    return _save(fig, "roi_traces", path, n, caption)


def _hist(ax, values: np.ndarray, label: str, color: str) -> int:
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if finite.size:
        ax.hist(finite, bins=min(50, max(5, finite.size // 3)), color=color)
    else:
        _no_data(ax, "no finite values")
    ax.set_xlabel(label, fontsize=8)
    ax.set_ylabel("ROIs", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"{finite.size} finite, {v.size - finite.size} not", fontsize=8)
    return int(finite.size)


def ratio_and_noise_histograms(r: np.ndarray, sigma_dff: np.ndarray, path: str | os.PathLike, *, title: str = "") -> Picture:
    """Histograms of the neuropil contamination ratio r and of the noise sigma of dF/F, one per panel."""
    fig = _figure("ratio_and_noise_histograms")
    a, b = fig.subplots(1, 2)
    n_r = _hist(a, r, "neuropil contamination ratio r", "#1f77b4")
    n_s = _hist(b, sigma_dff, "sigma of dF/F", "#d62728")
    fig.suptitle(title or "r and sigma(dF/F)", fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.82, bottom=0.16, wspace=0.3)
    return _save(fig, "ratio_and_noise_histograms", path, n_r + n_s, f"r of {n_r} ROIs, sigma(dF/F) of {n_s} ROIs")


def motion_offsets(times: np.ndarray, x: np.ndarray, y: np.ndarray, path: str | os.PathLike, *, title: str = "") -> Picture:
    """Rigid motion-correction offsets (pixels) in x and y over the recording."""
    fig = _figure("motion_offsets")
    ax = fig.add_subplot(1, 1, 1)
    t = np.asarray(times, dtype=np.float64)
    if t.size:
        tx, xs, ys = _decimate(t, np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        ax.plot(tx, xs, lw=0.7, label="x")
        ax.plot(tx, ys, lw=0.7, label="y")
        ax.legend(fontsize=7, loc="upper right")
        caption = f"max |x| {np.nanmax(np.abs(x)):.1f} px, max |y| {np.nanmax(np.abs(y)):.1f} px over {t.size} frames"
    else:
        _no_data(ax, "no motion correction recorded")
        caption = "no motion correction recorded"
    _axis_labels(ax, "time (s)", "offset (px)")
    fig.suptitle(title or "motion offsets", fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.86, bottom=0.16)
    return _save(fig, "motion_offsets", path, int(t.size), caption)


# --- stimulus analysis ---------------------------------------------------------------------------------------


def tuning_curves(directions: np.ndarray, responses: np.ndarray, roi_ids: Sequence[str], path: str | os.PathLike, *,
                  sem: Optional[np.ndarray] = None, xlabel: str = "direction (deg)", title: str = "") -> Picture:
    """Tuning curves (mean response per condition, SEM as error bars) of the given cells, one panel each:
    ``responses`` and ``sem`` are cells x conditions along ``directions``."""
    responses = np.atleast_2d(np.asarray(responses, dtype=np.float64))
    fig = _figure("tuning_curves")
    n = len(roi_ids)
    if n == 0:
        _no_data(fig.add_subplot(1, 1, 1), "no cells")
        return _save(fig, "tuning_curves", path, 0, "no cells")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, ax in enumerate(axes):
        err = None if sem is None else np.asarray(sem, dtype=np.float64)[i]
        ax.errorbar(directions, responses[i], yerr=err, marker="o", ms=3, lw=1)
        _label_panel(ax, str(roi_ids[i]), xlabel)
    _row_of_panels(fig, axes, "mean dF/F", title or "tuning curves of the most selective cells", left=0.06, wspace=0.35)
    return _save(fig, "tuning_curves", path, n, f"{n} cells: {', '.join(map(str, roi_ids))}")


def receptive_fields(on_maps: np.ndarray, off_maps: np.ndarray, roi_ids: Sequence[str], path: str | os.PathLike, *,
                     title: str = "") -> Picture:
    """ON (top row) and OFF (bottom row) receptive-field maps (cells x rows x cols) of the given cells."""
    on_maps, off_maps = np.asarray(on_maps, dtype=np.float64), np.asarray(off_maps, dtype=np.float64)
    n = len(roi_ids)
    fig = _figure("receptive_fields")
    if n == 0:
        _no_data(fig.add_subplot(1, 1, 1), "no cells")
        return _save(fig, "receptive_fields", path, 0, "no cells")
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        for row, (maps, cmap, name) in enumerate(((on_maps, "Reds", "ON"), (off_maps, "Blues", "OFF"))):
            ax = axes[row, i]
            m = np.nan_to_num(maps[i], nan=0.0)
            ax.imshow(m, cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name, fontsize=8)
            if row == 0:
                ax.set_title(str(roi_ids[i]), fontsize=8)
    fig.suptitle(title or "receptive fields (locally sparse noise)", fontsize=10)
    return _save(fig, "receptive_fields", path, n, f"{n} cells: {', '.join(map(str, roi_ids))}")


# --- ecephys -------------------------------------------------------------------------------------------------


def firing_rate_vs_depth(depth_um: np.ndarray, rate_hz: np.ndarray, quality: Sequence[str], path: str | os.PathLike, *,
                         title: str = "") -> Picture:
    """Each unit's firing rate against its depth along the probe (µm from the tip), coloured by quality."""
    depth_um, rate_hz = np.asarray(depth_um, dtype=np.float64), np.asarray(rate_hz, dtype=np.float64)
    quality = np.asarray([str(q) for q in quality], dtype=object)
    fig = _figure("firing_rate_vs_depth")
    ax = fig.add_subplot(1, 1, 1)
    if depth_um.size == 0:
        _no_data(ax, "no units")
    for q in sorted(set(quality)):
        sel = quality == q
        ax.scatter(rate_hz[sel], depth_um[sel], s=12, color=QUALITY_COLORS.get(q, "#333333"), label=f"{q} ({int(sel.sum())})")
    if depth_um.size:
        ax.legend(fontsize=7, loc="best")
    _axis_labels(ax, "firing rate (Hz)", "depth from tip (µm)")
    fig.suptitle(title or "firing rate vs depth", fontsize=10)
    fig.subplots_adjust(left=0.16, right=0.97, top=0.93, bottom=0.08)
    return _save(fig, "firing_rate_vs_depth", path, int(depth_um.size), f"{depth_um.size} units")


def spike_raster(spike_times: Sequence[np.ndarray], unit_ids: Sequence[str], onsets_s: np.ndarray, path: str | os.PathLike, *,
                 window_s: tuple[float, float] = (-0.5, 1.0), title: str = "") -> Picture:
    """Spikes of a few units aligned to stimulus onsets: one block of rows per unit, one row per onset."""
    onsets = np.asarray(onsets_s, dtype=np.float64)
    fig = _figure("spike_raster")
    ax = fig.add_subplot(1, 1, 1)
    row = 0
    yticks, ylabels = [], []
    for times, uid in zip(spike_times, unit_ids):
        times = np.sort(np.asarray(times, dtype=np.float64))
        xs, ys = [], []
        for k, t0 in enumerate(onsets):
            lo, hi = np.searchsorted(times, [t0 + window_s[0], t0 + window_s[1]])
            xs.append(times[lo:hi] - t0)
            ys.append(np.full(hi - lo, row + k))
        if xs:
            ax.scatter(np.concatenate(xs), np.concatenate(ys), s=1.5, marker="|", color="black")
        yticks.append(row + len(onsets) / 2)
        ylabels.append(str(uid))
        row += len(onsets) + 2
    if not len(unit_ids) or not onsets.size:
        _no_data(ax, "no units or no stimulus onsets")
    else:
        ax.axvline(0, color="#d62728", lw=0.8)
        ax.set_yticks(yticks)
        ax.set_yticklabels(ylabels, fontsize=6)
        ax.set_xlim(*window_s)
        ax.set_ylim(row, -1)
    ax.set_xlabel("time from stimulus onset (s)", fontsize=8)
    ax.tick_params(labelsize=7)
    fig.suptitle(title or "spikes around stimulus onsets", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.93, bottom=0.09)
    return _save(fig, "spike_raster", path, len(unit_ids), f"{len(unit_ids)} units x {onsets.size} onsets")


def mean_waveforms(waveforms: Sequence[np.ndarray], unit_ids: Sequence[str], sampling_rate_hz: Optional[float],
                   path: str | os.PathLike, *, title: str = "") -> Picture:
    """Mean waveform (on the peak channel, µV) of each given unit, one panel each; the time axis in ms, or in
    samples when ``sampling_rate_hz`` is None."""
    fig = _figure("mean_waveforms")
    n = len(unit_ids)
    if n == 0:
        _no_data(fig.add_subplot(1, 1, 1), "no units with waveforms")
        return _save(fig, "mean_waveforms", path, 0, "no units with waveforms")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for ax, wf, uid in zip(axes, waveforms, unit_ids):
        wf = np.asarray(wf, dtype=np.float64)
        x = np.arange(wf.size) if sampling_rate_hz is None else np.arange(wf.size) / sampling_rate_hz * 1e3
        ax.plot(x, wf * 1e6, lw=1)
        _label_panel(ax, str(uid), "samples" if sampling_rate_hz is None else "ms")
    _row_of_panels(fig, axes, "µV (peak channel)", title or "mean waveforms", left=0.07, wspace=0.15)
    return _save(fig, "mean_waveforms", path, n, f"{n} units")


def lfp_snippet(times: np.ndarray, volts: np.ndarray, channel_labels: Sequence[str], path: str | os.PathLike, *,
                title: str = "") -> Picture:
    """A short stretch of LFP (samples x channels, V), channels stacked with an offset."""
    v = np.asarray(volts, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    fig = _figure("lfp_snippet")
    ax = fig.add_subplot(1, 1, 1)
    if v.size == 0:
        _no_data(ax, "no LFP")
        return _save(fig, "lfp_snippet", path, 0, "no LFP")
    spread = float(np.nanpercentile(np.abs(v - np.nanmean(v, axis=0)), 99)) * 2 or 1.0
    for c in range(v.shape[1]):
        tx, y = _decimate(t, v[:, c])
        ax.plot(tx, (y - np.nanmean(v[:, c])) / spread + c, lw=0.5, color="black")
    step = max(1, v.shape[1] // 12)
    ax.set_yticks(range(0, v.shape[1], step))
    ax.set_yticklabels([str(channel_labels[c]) for c in range(0, v.shape[1], step)], fontsize=6)
    _axis_labels(ax, "time (s)", "channel")
    fig.suptitle(title or f"LFP, {v.shape[1]} channels", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.93, bottom=0.09)
    return _save(fig, "lfp_snippet", path, int(v.shape[1]), f"{v.shape[1]} channels, {t[-1] - t[0]:.2f} s")


# --- behavior ------------------------------------------------------------------------------------------------


def behavior_timeline(lick_times: np.ndarray, reward_times: np.ndarray, running_times: np.ndarray, running_speed: np.ndarray,
                      path: str | os.PathLike, *, title: str = "") -> Picture:
    """Running speed over the session with licks and rewards as ticks above it."""
    fig = _figure("behavior_timeline")
    run_ax, event_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    rt = np.asarray(running_times, dtype=np.float64)
    if rt.size:
        tx, ys = _decimate(rt, np.asarray(running_speed, dtype=np.float64))
        run_ax.plot(tx, ys, lw=0.5, color="#1f77b4")
    else:
        _no_data(run_ax, "no running speed")
    run_ax.set_ylabel("running (cm/s)", fontsize=8)
    licks, rewards = np.asarray(lick_times, dtype=np.float64), np.asarray(reward_times, dtype=np.float64)
    event_ax.eventplot([licks, rewards], lineoffsets=[1, 0], linelengths=0.8, colors=["black", "#2ca02c"], linewidths=0.6)
    event_ax.set_yticks([1, 0])
    event_ax.set_yticklabels([f"licks ({licks.size})", f"rewards ({rewards.size})"], fontsize=7)
    event_ax.set_xlabel("time (s)", fontsize=8)
    for ax in (run_ax, event_ax):
        ax.tick_params(labelsize=7)
    fig.suptitle(title or "licks, rewards and running", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.93, bottom=0.1, hspace=0.08)
    caption = f"{licks.size} licks, {rewards.size} rewards, {rt.size} running samples"
    return _save(fig, "behavior_timeline", path, int(licks.size + rewards.size), caption)


def trial_outcomes(outcomes: Mapping[str, int], path: str | os.PathLike, *, title: str = "") -> Picture:
    """Trial counts per outcome (e.g. hit, miss, false alarm, correct reject, aborted) as bars."""
    fig = _figure("trial_outcomes")
    ax = fig.add_subplot(1, 1, 1)
    names = list(outcomes)
    counts = [int(outcomes[k]) for k in names]
    if names:
        bars = ax.bar(range(len(names)), counts, color="#1f77b4")
        ax.bar_label(bars, fontsize=7)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=7, rotation=20)
    else:
        _no_data(ax, "no trials")
    ax.set_ylabel("trials", fontsize=8)
    ax.tick_params(labelsize=7)
    total = sum(counts)
    fig.suptitle(title or f"trial outcomes ({total} trials)", fontsize=10)
    fig.subplots_adjust(left=0.12, right=0.98, top=0.9, bottom=0.18)
    return _save(fig, "trial_outcomes", path, total, ", ".join(f"{k}: {v}" for k, v in zip(names, counts)) or "no trials")


# --- icephys -------------------------------------------------------------------------------------------------


def sweeps_by_stimulus_type(sweeps: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], path: str | os.PathLike, *,
                            ylabel: str = "membrane potential (mV)", title: str = "") -> Picture:
    """One panel per stimulus type with its sweeps overlaid: ``sweeps`` maps a type to ``(time s, response)`` pairs."""
    fig = _figure("sweeps_by_stimulus_type")
    types = [k for k, v in sweeps.items() if len(v)]
    if not types:
        _no_data(fig.add_subplot(1, 1, 1), "no sweeps")
        return _save(fig, "sweeps_by_stimulus_type", path, 0, "no sweeps")
    cols = min(3, len(types))
    rows = int(np.ceil(len(types) / cols))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    n = 0
    for ax, name in zip(axes, types):
        for t, y in sweeps[name]:
            tx, ty = _decimate(np.asarray(t, dtype=np.float64), np.asarray(y, dtype=np.float64))
            ax.plot(tx, ty, lw=0.5)
            n += 1
        ax.set_title(f"{name} ({len(sweeps[name])})", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("time (s)", fontsize=7)
    for ax in axes[len(types):]:
        ax.set_axis_off()
    axes[0].set_ylabel(ylabel, fontsize=7)
    fig.suptitle(title or "sweeps by stimulus type", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, top=0.9, bottom=0.07, hspace=0.45, wspace=0.25)
    return _save(fig, "sweeps_by_stimulus_type", path, n, f"{n} sweeps of {len(types)} stimulus types")


def fi_curve(current_pa: np.ndarray, rate_hz: np.ndarray, path: str | os.PathLike, *, title: str = "") -> Picture:
    """Firing rate against injected current (f-I curve) of the long-square sweeps."""
    i, f = np.asarray(current_pa, dtype=np.float64), np.asarray(rate_hz, dtype=np.float64)
    order = np.argsort(i)
    fig = _figure("fi_curve")
    ax = fig.add_subplot(1, 1, 1)
    if i.size:
        ax.plot(i[order], f[order], marker="o", ms=4, lw=1)
    else:
        _no_data(ax, "no long-square sweeps")
    _axis_labels(ax, "current (pA)", "firing rate (Hz)")
    fig.suptitle(title or "f-I curve", fontsize=10)
    fig.subplots_adjust(left=0.16, right=0.97, top=0.9, bottom=0.14)
    return _save(fig, "fi_curve", path, int(i.size), f"{i.size} sweeps, max {np.nanmax(f) if f.size else 0:.1f} Hz")
