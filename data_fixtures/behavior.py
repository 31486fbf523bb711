"""Synthetic Visual Behavior change-detection sessions.

Task model: images (or gratings) are flashed ``flash_duration_s`` on, ``blank_duration_s`` grey, on a
fixed grid starting at ``start_offset_s``. A trial starts on a flash; its change is planned
``change_flashes_min + Geometric(change_flash_p)`` flashes later (capped at ``change_flashes_max``).
With probability ``p_abort`` the mouse licks early and the trial is aborted (it ends
``abort_timeout_s`` after the lick; the next trial starts on the next flash). Otherwise the trial is a
go trial (the image changes) or, with probability ``catch_fraction``, a catch trial (a sham change,
same image). Licks in the response window ``response_window_s`` after the (sham) change are hits on go
trials (probability ``p_hit``; water reward at the lick, then a consumption lick bout) and false alarms
on catch trials (probability ``p_false_alarm``). A trial ends ``post_change_s`` after the change.

Session-type rules (``session_type`` = the LIMS ``stimulus_name``): ``_passive`` sessions have no licks
and no rewards (so no aborts, hits or false alarms); ``autorewards`` sessions deliver a reward at every
go change (``auto_rewarded``); ``TRAINING_0``/``TRAINING_1`` show static gratings (one presentation per
image epoch, no flashes); ``OPHYS_*`` sessions omit about ``omitted_flash_fraction`` of the flashes
(never a change or sham-change flash, nor the flash just before one); so do ``EPHYS_*`` sessions (the behavior
block of a Visual Behavior Neuropixels session).

Files (CSV):

* trials: ``trials_id, start_time, stop_time, change_time, is_change, go, catch, aborted, hit, miss,
  false_alarm, correct_reject, auto_rewarded, initial_image_name, change_image_name,
  response_latency, response_time, reward_time, reward_volume`` (times in s, volume in mL; trials are
  contiguous: ``stop_time`` is the next trial's ``start_time``; ``change_time`` is the sham-change
  time on catch trials and empty on aborted trials; ``response_latency`` is the first lick after the
  change minus ``change_time`` (s), empty when there was none).
* stimulus presentations: ``start_time, stop_time, duration, image_name, image_index, is_change,
  omitted, flashes_since_change, start_frame, end_frame, trials_id`` (omitted flashes have
  ``image_name = "omitted"`` and ``image_index = len(images)``; frames are 60 Hz stimulus frames;
  ``flashes_since_change`` counts presentations since the last change, 0 on a change flash).
* licks: ``timestamps, frame``; rewards: ``timestamps, volume, auto_rewarded``; running:
  ``timestamps, speed`` (cm/s at 60 Hz).

Truth (JSON): counts of every trial outcome, hit/false-alarm rates, d', omitted fraction, the image set
and the session-type flags.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from data_fixtures.eye_tracking import write_rig_files
from data_fixtures.spec import BehaviorSessionFiles, rng_for, write_csv, write_json
from data_fixtures.stimulus import MONITOR_RATE_HZ, RunningParams, running_speed

__all__ = ["BehaviorParams", "generate_behavior_session", "SESSION_TYPES", "IMAGE_SETS"]

SESSION_TYPES = (
    "TRAINING_0_gratings_autorewards_15min",
    "TRAINING_1_gratings",
    "TRAINING_2_gratings_flashed",
    "TRAINING_3_images_A_10uL_reward",
    "TRAINING_4_images_A_training",
    "TRAINING_5_images_A_handoff_ready",
    "OPHYS_0_images_A_habituation",
    "OPHYS_1_images_A",
    "OPHYS_2_images_A_passive",
    "OPHYS_3_images_A",
    "OPHYS_4_images_B",
    "OPHYS_5_images_B_passive",
    "OPHYS_6_images_B",
    "EPHYS_1_images_G_3uL_reward",
    "EPHYS_1_images_H_3uL_reward",
)

#: Eight image names per image set (illustrative names in the style of the released sets).
IMAGE_SETS = {
    "A": ("im000", "im031", "im035", "im045", "im054", "im073", "im075", "im106"),
    "B": ("im012", "im018", "im024", "im034", "im036", "im044", "im047", "im078"),
    "G": ("im005", "im012", "im024", "im034", "im036", "im044", "im047", "im078"),
    "H": ("im005", "im024", "im034", "im036", "im044", "im047", "im078", "im083"),
}
GRATINGS = ("gratings_0", "gratings_90", "gratings_180", "gratings_270")


@dataclasses.dataclass(frozen=True)
class BehaviorParams:
    """Parameters of a change-detection session (times in s, volumes in mL); tiny default = 5 minutes.

    See the module docstring for the meaning of each task parameter; ``realistic()`` = 60 minutes.
    """

    duration_s: float = 300.0
    start_offset_s: float = 0.5
    flash_duration_s: float = 0.25
    blank_duration_s: float = 0.5
    change_flashes_min: int = 4
    change_flashes_max: int = 11
    change_flash_p: float = 0.3
    catch_fraction: float = 0.25
    p_abort: float = 0.15
    p_hit: float = 0.75
    p_false_alarm: float = 0.2
    response_window_s: tuple[float, float] = (0.15, 0.75)
    response_latency_median_s: float = 0.4
    post_change_s: float = 3.0
    abort_timeout_s: float = 1.0
    reward_volume_ml: float = 0.007
    consumption_licks_range: tuple[int, int] = (3, 8)
    consumption_lick_rate_hz: float = 7.0
    omitted_flash_fraction: float = 0.05
    running: RunningParams = RunningParams()

    @classmethod
    def realistic(cls, **overrides) -> "BehaviorParams":
        """A 60 minute session (about 400-500 trials)."""
        base = dict(duration_s=3600.0)
        base.update(overrides)
        return cls(**base)


def _session_rules(session_type: str) -> dict:
    if session_type not in SESSION_TYPES:
        raise ValueError(f"unknown behavior session_type {session_type!r}; known: {', '.join(SESSION_TYPES)}")
    if "_images_" in session_type:
        letter = session_type.split("_images_")[1][0]
        images = IMAGE_SETS[letter]
        image_set = letter
    else:
        images, image_set = GRATINGS, "gratings"
    return {
        "images": images,
        "image_set": image_set,
        "flashed": not session_type.startswith(("TRAINING_0", "TRAINING_1")),
        "passive": "passive" in session_type,
        "autorewards": "autorewards" in session_type,
        "omissions": session_type.startswith(("OPHYS", "EPHYS")),
    }


def _frame(t: np.ndarray | float) -> np.ndarray:
    return np.floor(np.asarray(t, dtype=float) * MONITOR_RATE_HZ + 1e-6).astype(np.int64)


def generate_behavior_session(
    out_dir: str | Path,
    *,
    behavior_session_id: int,
    session_type: str,
    params: BehaviorParams = BehaviorParams(),
    seed: int = 0,
) -> BehaviorSessionFiles:
    """Write a synthetic change-detection session under ``out_dir/behavior_session_<id>/``."""
    p = params
    rules = _session_rules(session_type)
    if p.response_window_s[0] >= p.response_window_s[1]:
        raise ValueError("response_window_s must be (start, end) with start < end")
    if p.change_flashes_min < 2 or p.change_flashes_max < p.change_flashes_min:
        raise ValueError("need 2 <= change_flashes_min <= change_flashes_max")
    if p.flash_duration_s <= 0 or p.blank_duration_s < 0 or not 0 < p.change_flash_p <= 1:
        raise ValueError("need flash_duration_s > 0, blank_duration_s >= 0 and 0 < change_flash_p <= 1")
    rng = rng_for(seed, 21, 1)
    period = p.flash_duration_s + p.blank_duration_s
    n_flashes = int(math.floor((p.duration_s - p.start_offset_s - p.flash_duration_s) / period)) + 1
    onsets = p.start_offset_s + np.arange(max(n_flashes, 0)) * period
    images = rules["images"]
    passive = rules["passive"]

    flash_image = np.empty(len(onsets), dtype=object)
    flash_change = np.zeros(len(onsets), dtype=bool)
    protected = np.zeros(len(onsets), dtype=bool)  # change / sham-change flashes and the ones before
    flash_trial = np.full(len(onsets), -1, dtype=np.int64)
    trials: list[dict] = []
    licks: list[float] = []
    rewards: list[tuple[float, float, bool]] = []

    current = images[int(rng.integers(len(images)))]
    k = 0
    lat_sigma = 0.25
    lo_w, hi_w = p.response_window_s

    def response_latency() -> float:
        value = p.response_latency_median_s * math.exp(lat_sigma * rng.standard_normal())
        return float(min(max(value, lo_w + 1e-3), hi_w - 1e-3))

    while k < len(onsets):
        extra = min(int(rng.geometric(p.change_flash_p)) - 1, p.change_flashes_max - p.change_flashes_min)
        change_k = k + p.change_flashes_min + extra
        end_time = onsets[change_k] + p.post_change_s if change_k < len(onsets) else math.inf
        if end_time > p.duration_s:
            flash_image[k:] = current
            flash_trial[k:] = -1
            break
        trial = {
            "trials_id": len(trials),
            "start_time": float(onsets[k]),
            "change_time": math.nan,
            "is_change": False,
            "go": False,
            "catch": False,
            "aborted": False,
            "hit": False,
            "miss": False,
            "false_alarm": False,
            "correct_reject": False,
            "auto_rewarded": False,
            "initial_image_name": current,
            "change_image_name": None,
            "response_latency": math.nan,
            "response_time": math.nan,
            "reward_time": math.nan,
            "reward_volume": 0.0,
        }
        if not passive and rng.random() < p.p_abort:
            abort_k = int(rng.integers(k + 1, change_k))
            lick = float(onsets[abort_k] + rng.uniform(0.1, period - 0.05))
            licks.append(lick)
            trial.update(aborted=True, response_time=lick)
            stop = lick + p.abort_timeout_s
            next_k = int(np.searchsorted(onsets, stop - 1e-9))
            flash_image[k:next_k] = current
            flash_trial[k:next_k] = trial["trials_id"]
            trials.append(trial)
            k = next_k
            continue
        go = rng.random() >= p.catch_fraction
        change_time = float(onsets[change_k])
        trial.update(change_time=change_time, go=go, catch=not go)
        flash_image[k:change_k] = current
        if go:
            choices = [im for im in images if im != current]
            new = choices[int(rng.integers(len(choices)))]
            flash_change[change_k] = True
            trial.update(is_change=True, change_image_name=new)
            current = new
        else:
            trial.update(change_image_name=current)
        protected[max(change_k - 1, 0) : change_k + 1] = True
        responded = False
        if not passive:
            responded = rng.random() < (p.p_hit if go else p.p_false_alarm)
        if responded:
            latency = response_latency()
            lick = change_time + latency
            licks.append(lick)
            trial.update(response_latency=latency, response_time=lick)
            if go:
                trial.update(hit=True)
            else:
                trial.update(false_alarm=True)
        else:
            trial.update(miss=go, correct_reject=not go)
        if go and rules["autorewards"]:
            rewards.append((change_time, p.reward_volume_ml, True))
            trial.update(auto_rewarded=True, reward_time=change_time, reward_volume=p.reward_volume_ml)
        elif go and responded:
            reward_time = trial["response_time"]
            rewards.append((reward_time, p.reward_volume_ml, False))
            trial.update(reward_time=reward_time, reward_volume=p.reward_volume_ml)
        if go and responded:
            n_bout = int(rng.integers(p.consumption_licks_range[0], p.consumption_licks_range[1] + 1))
            gaps = rng.exponential(0.3 / p.consumption_lick_rate_hz, n_bout) + 0.7 / p.consumption_lick_rate_hz
            bout = trial["response_time"] + np.cumsum(gaps)
            licks.extend(bout[bout < end_time - p.response_window_s[1]].tolist())
        next_k = int(np.searchsorted(onsets, end_time - 1e-9))
        flash_image[change_k:next_k] = current
        flash_trial[k:next_k] = trial["trials_id"]
        trials.append(trial)
        k = next_k

    # trials are contiguous: each stops where the next starts; the last stops at its planned end
    for i, trial in enumerate(trials):
        if i + 1 < len(trials):
            trial["stop_time"] = trials[i + 1]["start_time"]
        elif trial["aborted"]:
            trial["stop_time"] = float(min(trial["response_time"] + p.abort_timeout_s, p.duration_s))
        else:
            trial["stop_time"] = float(trial["change_time"] + p.post_change_s)
    trial_columns = [
        "trials_id", "start_time", "stop_time", "change_time", "is_change", "go", "catch", "aborted", "hit",
        "miss", "false_alarm", "correct_reject", "auto_rewarded", "initial_image_name", "change_image_name",
        "response_latency", "response_time", "reward_time", "reward_volume",
    ]  # fmt: skip
    trials_df = pd.DataFrame(trials, columns=trial_columns)

    # omissions (OPHYS sessions): from a separate stream so the task does not depend on them
    omitted = np.zeros(len(onsets), dtype=bool)
    if rules["omissions"] and rules["flashed"] and len(onsets):
        draw = rng_for(seed, 21, 2).random(len(onsets)) < p.omitted_flash_fraction
        omitted = draw & ~protected & ~flash_change
        omitted[0] = False

    if rules["flashed"]:
        pres = pd.DataFrame(
            {
                "start_time": onsets,
                "stop_time": onsets + p.flash_duration_s,
                "image_name": np.where(omitted, "omitted", flash_image.astype(str)),
                "is_change": flash_change,
                "omitted": omitted,
                "trials_id": flash_trial,
            }
        )
    else:
        starts = np.flatnonzero(np.r_[True, flash_image[1:] != flash_image[:-1]]) if len(onsets) else np.array([], int)
        stops = np.r_[onsets[starts[1:]], min(p.duration_s, onsets[-1] + period)] if len(starts) else np.array([])
        pres = pd.DataFrame(
            {
                "start_time": onsets[starts],
                "stop_time": stops,
                "image_name": flash_image[starts].astype(str),
                "is_change": flash_change[starts],
                "omitted": np.zeros(len(starts), dtype=bool),
                "trials_id": flash_trial[starts],
            }
        )
    lookup = {name: i for i, name in enumerate(images)}
    pres["image_index"] = [lookup.get(name, len(images)) for name in pres["image_name"]]
    pres["duration"] = pres["stop_time"] - pres["start_time"]
    since = np.zeros(len(pres), dtype=np.int64)
    count = 0
    for i, change in enumerate(pres["is_change"].to_numpy()):
        count = 0 if change else (count + 1 if i else 0)
        since[i] = count
    pres["flashes_since_change"] = since
    pres["start_frame"] = _frame(pres["start_time"].to_numpy())
    pres["end_frame"] = _frame(pres["stop_time"].to_numpy())
    pres = pres[
        ["start_time", "stop_time", "duration", "image_name", "image_index", "is_change", "omitted",
         "flashes_since_change", "start_frame", "end_frame", "trials_id"]
    ]  # fmt: skip

    lick_times = np.sort(np.asarray([t for t in licks if t < p.duration_s], dtype=float))
    licks_df = pd.DataFrame({"timestamps": lick_times, "frame": _frame(lick_times)})
    rewards_df = pd.DataFrame(rewards, columns=["timestamps", "volume", "auto_rewarded"])
    rewards_df = rewards_df.sort_values("timestamps", kind="stable")
    run_ts, speed = running_speed(p.duration_s, p.running, rng_for(seed, 21, 3))

    session_dir = Path(out_dir) / f"behavior_session_{int(behavior_session_id)}"
    session_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "trials": write_csv(trials_df, session_dir / "trials.csv"),
        "licks": write_csv(licks_df, session_dir / "licks.csv"),
        "rewards": write_csv(rewards_df.reset_index(drop=True), session_dir / "rewards.csv"),
        "running": write_csv(pd.DataFrame({"timestamps": run_ts, "speed": speed}), session_dir / "running_speed.csv"),
        "presentations": write_csv(pres, session_dir / "stimulus_presentations.csv"),
    }

    n_go = int(trials_df["go"].sum())
    n_catch = int(trials_df["catch"].sum())
    hits, fas = int(trials_df["hit"].sum()), int(trials_df["false_alarm"].sum())
    hit_rate = hits / n_go if n_go else math.nan
    fa_rate = fas / n_catch if n_catch else math.nan

    def z(rate: float, n: int) -> float:
        if not n or not np.isfinite(rate):
            return math.nan
        clipped = min(max(rate, 1.0 / (2 * n)), 1.0 - 1.0 / (2 * n))
        return float(stats.norm.ppf(clipped))

    n_flashed = int(len(pres))
    truth = {
        "behavior_session_id": int(behavior_session_id),
        "session_type": session_type,
        "seed": int(seed),
        "duration_s": float(p.duration_s),
        "image_set": rules["image_set"],
        "images": list(images),
        "flashed": rules["flashed"],
        "passive": rules["passive"],
        "autorewards": rules["autorewards"],
        "omissions": rules["omissions"],
        "n_trials": int(len(trials_df)),
        "n_go": n_go,
        "n_catch": n_catch,
        "n_aborted": int(trials_df["aborted"].sum()),
        "n_hit": hits,
        "n_miss": int(trials_df["miss"].sum()),
        "n_false_alarm": fas,
        "n_correct_reject": int(trials_df["correct_reject"].sum()),
        "hit_rate": hit_rate,
        "false_alarm_rate": fa_rate,
        "d_prime": z(hit_rate, n_go) - z(fa_rate, n_catch) if n_go and n_catch else math.nan,
        "n_presentations": n_flashed,
        "n_omitted": int(pres["omitted"].sum()),
        "omitted_fraction": float(pres["omitted"].mean()) if n_flashed else 0.0,
        "n_licks": int(len(licks_df)),
        "n_rewards": int(len(rewards_df)),
        "total_reward_ml": float(rewards_df["volume"].sum()) if len(rewards_df) else 0.0,
        "params": {k: v for k, v in dataclasses.asdict(p).items() if k != "running"},
    }
    truth_path = write_json(truth, session_dir / "truth.json")
    sync_path, _ = write_rig_files(session_dir, duration_s=p.duration_s, seed=seed, eye_tracking=False)
    return BehaviorSessionFiles(
        behavior_session_id=int(behavior_session_id),
        session_type=session_type,
        trials_path=paths["trials"],
        licks_path=paths["licks"],
        rewards_path=paths["rewards"],
        running_speed_path=paths["running"],
        stimulus_presentations_path=paths["presentations"],
        truth_path=truth_path,
        duration_s=float(p.duration_s),
        sync_path=sync_path,
    )
