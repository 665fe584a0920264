"""The admin page in real headless Chromium (the Debian package, driven by Playwright): thumbnails
of the Secondary Captures load, dead letters can be retried with the token, the file tester routes.

Screenshots are kept under the test's tmp path and, when ``OSTEONODE_TEST_ARTIFACTS`` is set,
copied to ``test-artifacts/`` at the repository root for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from admin_world import ADMIN_TOKEN, REPOSITORY, AdminWorld
from sqlalchemy import select

from osteonode.store.tables import Event, EventKind

CHROMIUM = shutil.which("chromium")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")


@pytest.fixture
def browser_page() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def _keep(page, tmp_path: Path, name: str) -> Path:
    screenshot = tmp_path / name
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("OSTEONODE_TEST_ARTIFACTS"):
        artifacts = REPOSITORY / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, artifacts / name)
    return screenshot


def test_admin_page_shows_results_with_their_secondary_capture_thumbnails(
    admin_world: AdminWorld, browser_page, tmp_path: Path
) -> None:
    page = browser_page
    page.goto(admin_world.base_url + "/", wait_until="load")

    thumbnails = page.locator("#results img")
    widths = page.eval_on_selector_all(
        "#results img", "images => images.map(i => i.complete ? i.naturalWidth : 0)"
    )
    screenshot = _keep(page, tmp_path, "admin-page.png")

    assert thumbnails.count() == 2
    assert all(width > 100 for width in widths), widths
    assert page.locator("#health-status").inner_text() == "pass"
    assert page.locator('[data-job-state="done"] b').inner_text() == "2"
    assert page.locator('[data-job-state="skipped"] b').inner_text() == "1"
    assert page.locator("#dead-letters tr[data-delivery-id]").count() == 4
    assert "not evaluable: vertebrae L1-L4 not found" in page.locator("#results").inner_text()
    lumbar_model = page.locator('#models tr[data-model="lumbar-demo"]')
    assert (
        "lumbar" in lumbar_model.inner_text()
        and "not for diagnostic use" in lumbar_model.inner_text()
    )
    assert "lateral-view" in page.locator("#routing").inner_text()
    lumbar = page.locator('#pipelines tr[data-pipeline="lumbar"]').inner_text()
    assert lumbar.split("\t") == ["lumbar", "yes", "lumbar-demo", "pacs", "loaded"]
    assert page.locator('#pipelines tr[data-pipeline="lumbar_ap"] td').nth(1).inner_text() == "no"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_retry_button_sends_a_dead_letter_again_with_the_admin_token(
    admin_world: AdminWorld, browser_page, tmp_path: Path
) -> None:
    page = browser_page
    page.goto(admin_world.base_url + "/", wait_until="load")
    row = page.locator("#dead-letters tr[data-delivery-id]").first
    delivery_id = int(row.get_attribute("data-delivery-id"))

    row.locator('input[name="token"]').fill(ADMIN_TOKEN)
    row.locator("button").click()
    page.wait_for_selector("#notice")
    _keep(page, tmp_path, "admin-page-retried.png")

    assert page.locator("#notice").inner_text() == f"delivery {delivery_id} queued again"
    requeued = admin_world.query(
        lambda session: list(
            session.scalars(select(Event).where(Event.kind == EventKind.DELIVERY_REQUEUED))
        )
    )
    assert [event.details.get("delivery_id") for event in requeued] == [delivery_id]


def test_file_tester_shows_where_an_uploaded_film_would_go(
    admin_world: AdminWorld, browser_page, tmp_path: Path
) -> None:
    page = browser_page
    answers = {}
    for film in (admin_world.spine, admin_world.lateral):
        page.goto(admin_world.base_url + "/", wait_until="load")
        page.set_input_files('#route-form input[name="file"]', str(film))
        page.fill('#route-form input[name="token"]', ADMIN_TOKEN)
        page.click("#route-form button")
        page.wait_for_selector("#route-answer")
        answers[film.name] = " ".join(page.locator("#route-answer").inner_text().split())
    _keep(page, tmp_path, "admin-page-route-tester.png")

    assert answers["spine.dcm"] == "spine.dcm: routed to lumbar by rule lumbar-spine"
    assert answers["lateral.dcm"].startswith("lateral.dcm: skipped: lateral_view")
