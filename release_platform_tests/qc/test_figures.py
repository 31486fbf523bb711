"""Each QC figure on synthetic arrays: a valid PNG of the figure's size, not blank; the ROI figure draws one
closed outline per ROI, in the colour of its validity, counted in the written pixels."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import image as mpimg
from scipy import ndimage

from release_platform.qc import figures
from release_platform.qc.figures import DPI, FIGSIZE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _pixels(picture: figures.Picture) -> np.ndarray:
    """The PNG's RGB pixels (0-255), after checking the file is a PNG of the figure's declared size."""
    data = picture.path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{picture.path} is not a PNG"
    rgba = mpimg.imread(picture.path, format="png")
    w, h = (int(round(v * DPI)) for v in FIGSIZE[picture.name])
    assert rgba.shape[:2] == (h, w) == (picture.height, picture.width), (rgba.shape, w, h)
    assert not list(picture.path.parent.glob("*.inprogress")), "a temporary file was left"
    return np.round(rgba[..., :3] * 255).astype(np.int64)


def _not_blank(pixels: np.ndarray) -> None:
    """Not one colour, and a fair share of pixels differ from the (white) background."""
    flat = pixels.reshape(-1, 3)
    assert len(np.unique(flat, axis=0)) > 10
    background = np.all(flat == flat[0], axis=1).mean()
    assert background < 0.985, f"{background:.3f} of the pixels are background"


def _synthetic_plane(rng, n_rois: int, size: int = 96):
    """Disjoint disc ROIs at known places on a textured average projection."""
    image = rng.normal(1000, 60, (size, size))
    masks, centers = [], []
    grid = np.linspace(10, size - 14, int(np.ceil(np.sqrt(n_rois))))
    for k in range(n_rois):
        cy, cx = grid[k // len(grid)], grid[k % len(grid)]
        radius = 3 + k % 2
        yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        mask = yy**2 + xx**2 <= radius**2
        y, x = int(cy) - radius, int(cx) - radius
        image[y : y + mask.shape[0], x : x + mask.shape[1]][mask] += 400
        masks.append((x, y, mask))
        centers.append((cy, cx))
    return image, masks


@pytest.mark.parametrize("n_rois, n_excluded", [(12, 4), (7, 0), (1, 1)])
def test_roi_contours_draw_one_outline_per_roi_in_its_colour(tmp_path, n_rois, n_excluded):
    rng = np.random.default_rng(n_rois)
    image, masks = _synthetic_plane(rng, n_rois)
    valid = [k >= n_excluded for k in range(n_rois)]
    pic = figures.roi_contours(image, masks, valid, tmp_path / "plane" / "roi_contours.png", title="plane 1")
    px = _pixels(pic)
    _not_blank(px)
    assert pic.items == n_rois
    green = (px[..., 0] == 0) & (px[..., 1] == 255) & (px[..., 2] == 0)
    red = (px[..., 0] == 255) & (px[..., 1] == 0) & (px[..., 2] == 0)
    eight = np.ones((3, 3))
    assert ndimage.label(green, structure=eight)[1] == n_rois - n_excluded
    assert ndimage.label(red, structure=eight)[1] == n_excluded
    assert f"{n_rois} ROIs" in pic.caption


def test_roi_contours_refuse_mismatched_inputs(tmp_path):
    with pytest.raises(ValueError, match="2 masks but 1"):
        figures.roi_contours(np.zeros((8, 8)), [(0, 0, np.ones((2, 2), bool))] * 2, [True], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_brightest_and_flagged_choose_by_brightness_and_flag_count():
    brightness = np.array([5.0, 9.0, 1.0, 7.0, 3.0, np.nan, 8.0])
    valid = np.array([True, True, True, False, True, True, False])
    flags = np.array([0, 0, 2, 1, 0, 3, 1])
    bright, flagged = figures.brightest_and_flagged(brightness, flags, valid, n=2)
    assert bright == [1, 0]
    assert flagged == [5, 2]  # most flags first, then the brighter of the single-flag ROIs would follow
    _, flagged3 = figures.brightest_and_flagged(brightness, flags, valid, n=3)
    assert flagged3 == [5, 2, 6]


def test_roi_traces_histograms_and_motion(tmp_path):
    rng = np.random.default_rng(1)
    t = np.arange(3000) / 30.0
    sets = {name: rng.normal(100, 5, (4, t.size)) for name in ("roi", "neuropil", "demixed", "neuropil_corrected")}
    sets["dff"] = rng.normal(0, 0.1, (4, t.size))
    pic = figures.roi_traces(t, sets, ["11", "12", "13", "14"], ["brightest", "brightest", "2 flag(s)", "1 flag(s)"],
                             tmp_path / "traces.png")
    _not_blank(_pixels(pic))
    assert pic.items == 4
    with pytest.raises(ValueError, match="frames"):
        figures.roi_traces(t[:10], sets, ["11", "12", "13", "14"], ["a"] * 4, tmp_path / "bad.png")

    r = np.r_[rng.uniform(0.3, 1.0, 50), np.nan]
    pic = figures.ratio_and_noise_histograms(r, rng.gamma(2, 0.05, 50), tmp_path / "hist.png")
    _not_blank(_pixels(pic))
    assert pic.items == 100

    pic = figures.motion_offsets(t, rng.integers(-3, 4, t.size), rng.integers(-2, 3, t.size), tmp_path / "motion.png")
    _not_blank(_pixels(pic))
    assert pic.items == t.size


def test_stimulus_figures(tmp_path):
    rng = np.random.default_rng(2)
    directions = np.arange(0, 360, 45.0)
    resp = np.exp(np.cos(np.deg2rad(directions[None, :] - rng.uniform(0, 360, (3, 1)))))
    pic = figures.tuning_curves(directions, resp, ["1", "2", "3"], tmp_path / "tuning.png", sem=resp * 0.1)
    _not_blank(_pixels(pic))
    on, off = rng.normal(0, 1, (3, 8, 14)), rng.normal(0, 1, (3, 8, 14))
    pic = figures.receptive_fields(on, off, ["1", "2", "3"], tmp_path / "rf.png")
    _not_blank(_pixels(pic))
    assert pic.items == 3


def test_ecephys_figures(tmp_path):
    rng = np.random.default_rng(3)
    n = 40
    pic = figures.firing_rate_vs_depth(rng.uniform(0, 3800, n), rng.gamma(2, 3, n), rng.choice(["good", "mua", "noise"], n),
                                       tmp_path / "depth.png")
    _not_blank(_pixels(pic))
    assert pic.items == n
    onsets = np.arange(1, 50, 2.0)
    spikes = [np.sort(rng.uniform(0, 52, 400)) for _ in range(4)]
    pic = figures.spike_raster(spikes, ["a", "b", "c", "d"], onsets, tmp_path / "raster.png")
    _not_blank(_pixels(pic))
    waves = [np.sin(np.linspace(0, 3, 82)) * -1e-4 for _ in range(3)]
    pic = figures.mean_waveforms(waves, ["a", "b", "c"], 30000.0, tmp_path / "waves.png")
    _not_blank(_pixels(pic))
    t = np.arange(2500) / 1250.0
    lfp = rng.normal(0, 1e-4, (t.size, 24))
    pic = figures.lfp_snippet(t, lfp, [str(c) for c in range(24)], tmp_path / "lfp.png")
    _not_blank(_pixels(pic))
    assert pic.items == 24


def test_behavior_figures(tmp_path):
    rng = np.random.default_rng(4)
    t = np.arange(0, 600, 1 / 60)
    pic = figures.behavior_timeline(np.sort(rng.uniform(0, 600, 300)), np.sort(rng.uniform(0, 600, 40)), t,
                                    20 + 10 * np.sin(t / 30), tmp_path / "behavior.png")
    _not_blank(_pixels(pic))
    assert pic.items == 340
    pic = figures.trial_outcomes({"hit": 40, "miss": 12, "false_alarm": 5, "correct_reject": 30, "aborted": 60},
                                 tmp_path / "outcomes.png")
    _not_blank(_pixels(pic))
    assert pic.items == 147


def test_icephys_figures(tmp_path):
    rate = 50_000.0
    t = np.arange(int(1.5 * rate)) / rate
    sweeps = {"Long Square": [(t, -70 + 10 * (t > 0.1) * (t < 1.1) * k) for k in range(1, 4)],
              "Ramp": [(t, -70 + 5 * t)]}
    pic = figures.sweeps_by_stimulus_type(sweeps, tmp_path / "sweeps.png")
    _not_blank(_pixels(pic))
    assert pic.items == 4
    pic = figures.fi_curve(np.array([50, 150, 100, 200.0]), np.array([0, 12, 4, 20.0]), tmp_path / "fi.png")
    _not_blank(_pixels(pic))


def test_a_failed_write_leaves_no_file_and_keeps_the_previous(tmp_path, monkeypatch):
    target = tmp_path / "fi.png"
    figures.fi_curve(np.array([1.0, 2.0]), np.array([0.0, 5.0]), target)
    before = target.read_bytes()

    def broken(self, *args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(figures.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk on fire"):
        figures.fi_curve(np.array([1.0, 2.0]), np.array([3.0, 9.0]), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fi.png"]
