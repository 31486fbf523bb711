"""The Dagster UI in Chromium: the asset graph is there, one partition materialized through the UI
(Materialize → pick the partition → Launch) succeeds, for exactly that partition, and an ophys session's QC
figures show as pictures on its qc_report asset's page.

Needs the system Chromium (/usr/bin/chromium; never a downloaded browser). Skipped without it unless
RELEASE_PLATFORM_REQUIRE_BROWSER is 1, true or yes, where it fails.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import numpy as np
import pytest

from release_platform.cli import sync_partitions
from release_platform.lims import LimsClient
from release_platform_tests.e2e.conftest import browser_required

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
LOCATION = "release_platform.definitions"  # the code location `dagster dev -m release_platform.definitions` serves
KINDS = ("ophys_session", "behavior_session", "ecephys_session", "icephys_cell")
KIND, PARTITION = "behavior_session", "3001"
ACTION_TIMEOUT_MS = 30_000
RUN_TIMEOUT_MS = 90_000


def _unavailable(reason: str) -> None:
    if browser_required():
        pytest.fail(f"{reason} (RELEASE_PLATFORM_REQUIRE_BROWSER={os.environ['RELEASE_PLATFORM_REQUIRE_BROWSER']})")
    pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def _chromium() -> None:
    """Checked before the module's platform starts, so a machine without a browser pays nothing."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install -e '.[dev]')")


@pytest.fixture
def page(request, platform, tmp_path):
    """A Chromium page; on a failed test its screenshot is saved under the test's tmp dir."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=ACTION_TIMEOUT_MS)  # assertions wait as long as actions (default 5 s)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            page = context.new_page()
            yield page
            report = getattr(request.node, "rep_call", None)
            if report is None or report.failed:
                shot = tmp_path / "failure.png"
                try:
                    page.screenshot(path=str(shot), full_page=True)
                    print(f"screenshot of the failure: {shot} (page {page.url})")
                except Exception as exc:  # the screenshot must not hide the test's own error
                    print(f"no screenshot: {exc}")
                print(f"--- dagster dev log (tail)\n{platform.log_tail()}")
        finally:
            browser.close()


def _failure_summary(instance: dg.DagsterInstance, run_id: str) -> str:
    failures = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    messages = []
    for entry in failures:
        error = entry.dagster_event.event_specific_data.error
        messages.append(f"{entry.dagster_event.step_key}: {error.message.strip() if error else entry.message}")
    return "\n".join(messages) or "(no step failure recorded)"


def test_materialize_one_partition_from_the_ui(platform, page):
    from playwright.sync_api import expect

    # The LIMS sessions become partitions the way the platform does it outside the sensors
    # (`release-platform materialize` runs the same sync); no run exists yet.
    client = LimsClient(platform.lims_url)
    try:
        with platform.instance() as instance:
            synced = sync_partitions(instance, client)
            assert instance.get_runs() == []
    finally:
        client.dispose()
    assert synced[KIND] == ["3001", "3002", "3003"], synced

    # The asset graph: the four session groups, and in each group's graph its input asset, shown alone
    # (selection `key:"<kind>_inputs"`) so that it is drawn in full however large the group grows.
    page.goto(f"{platform.url}/asset-groups")
    expect(page.get_by_text("Global asset lineage")).to_be_visible()
    for kind in KINDS:
        expect(page.get_by_text(kind, exact=True).first).to_be_visible()
    for kind in (*[k for k in KINDS if k != KIND], KIND):  # end on the group we materialize from
        selection = quote(f'key:"{kind}_inputs"')
        page.goto(f"{platform.url}/locations/{LOCATION}/asset-groups/{kind}/lineage~{selection}/")
        expect(page.get_by_text(f"{kind}_inputs", exact=True)).to_be_visible()
    expect(page.get_by_text("3 partitions", exact=True)).to_be_visible()  # 3001, 3002 and 3003

    # Materialize → pick exactly one partition → Launch.
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog").filter(has_text=f"Launch runs to materialize {KIND}_inputs")
    expect(dialog).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    picker = page.get_by_role("dialog").filter(has=page.get_by_placeholder("Filter partitions"))
    picker.get_by_placeholder("Filter partitions").fill(PARTITION)
    picker.get_by_role("menuitem").filter(has_text=PARTITION).filter(has_not_text="Select all").click()
    page.keyboard.press("Escape")  # close the partition picker, not the launch dialog
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    dialog.get_by_role("button", name="Launch 1 run").click()

    # The launch toast links to the run; follow the run in the UI until it ends.
    expect(page.get_by_text("Launched run")).to_be_visible()
    page.get_by_text("View", exact=True).click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    expect(page.get_by_text(f"partition: {PARTITION}", exact=True)).to_be_visible()
    status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    started = time.monotonic()
    expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
    shown = status.inner_text().strip()

    # The instance agrees: one run, for exactly that partition, succeeded and materialized only it.
    with platform.instance() as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None, f"the UI showed run {run_id}, the instance has no such run"
        assert shown == "Success" and run.status == dg.DagsterRunStatus.SUCCESS, (
            f"run {run_id} is {run.status.value} (UI shows {shown!r}) after {time.monotonic() - started:.0f} s:\n"
            f"{_failure_summary(instance, run_id)}"
        )
        assert run.tags.get("dagster/partition") == PARTITION
        assert [r.run_id for r in instance.get_runs()] == [run_id]
        assert run.asset_selection == {dg.AssetKey(f"{KIND}_inputs")}
        assert instance.get_materialized_partitions(dg.AssetKey(f"{KIND}_inputs")) == {PARTITION}
        for kind in KINDS:
            if kind != KIND:
                assert not instance.get_materialized_partitions(dg.AssetKey(f"{kind}_inputs"))


QC_ASSET, QC_PARTITION = "ophys_session_qc_report", "1001"


def test_qc_figures_show_as_pictures_on_the_asset_page(platform, page, tmp_path):
    """A materialization of an ophys session's qc_report with its metadata built as the asset builds it (the ROI
    figure of a synthetic plane): the asset's page and the partition's event offer the Markdown, and opening it shows
    the thumbnail itself, an <img> decoded from an embedded data: URI at the thumbnail's size."""
    from playwright.sync_api import expect

    from release_platform.assets.qc_report import qc_metadata, write_pages
    from release_platform.qc import figures
    from release_platform.qc.report import THUMBNAIL_WIDTH

    rng = np.random.default_rng(7)
    image = rng.normal(1000, 50, (64, 64))
    disc = np.add.outer(np.arange(-3, 4) ** 2, np.arange(-3, 4) ** 2) <= 9
    masks = [(x, y, disc) for x, y in ((8, 8), (30, 12), (45, 40), (12, 44))]
    picture = figures.roi_contours(image, masks, [True, True, True, False], tmp_path / "roi_contours.png", title="plane 1101")
    groups = {"ophys_experiment 1101": [picture]}
    page_path, _ = write_pages(tmp_path, "ophys_session", QC_PARTITION, groups)
    client = LimsClient(platform.lims_url)
    try:
        with platform.instance() as instance:
            sync_partitions(instance, client)
            instance.report_runless_asset_event(dg.AssetMaterialization(
                asset_key=QC_ASSET, partition=QC_PARTITION, metadata=qc_metadata(groups, page_path)))
    finally:
        client.dispose()

    for view in ("", f"?view=events&partition={QC_PARTITION}"):
        page.goto(f"{platform.url}/assets/{QC_ASSET}{view}")
        expect(page.get_by_text("qc_figures", exact=True).first).to_be_visible()
        page.get_by_text("[Show Markdown]").first.click()
        thumbnail = page.locator("img[src^='data:image/png;base64,'][alt*='roi_contours']")
        expect(thumbnail).to_have_count(1)
        expect(thumbnail).to_be_visible()
        width, height = thumbnail.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert (width, height) == (THUMBNAIL_WIDTH, THUMBNAIL_WIDTH), (width, height)  # decoded, not a broken image
        assert "4 ROIs: 3 valid" in thumbnail.get_attribute("alt")
        page.keyboard.press("Escape")
