"""The review page driven in real headless Chromium (Debian's /usr/bin/chromium)."""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import sync_playwright
from review_support import filled_store

from streamguard.quarantine.api import create_app
from streamguard.quarantine.service import BackgroundServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def served(tmp_path):
    store = filled_store(tmp_path / "q.db")
    token = store.add_token("rita", "reviewer")
    server = BackgroundServer(create_app(store), "127.0.0.1", 0).start()
    yield server.url, token, store
    server.stop()
    store.close()


def test_log_in_open_campaign_bulk_approve_queue_shrinks(served, tmp_path):
    url, token, store = served
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=FLAGS, ignore_default_args=["--headless"]
        )
        page = browser.new_page()
        page.goto(url)
        page.fill("#token", "wrong-token")
        page.click("#login-button")
        page.wait_for_selector("#login-error:has-text('valid API token')")
        page.fill("#token", token)
        page.click("#login-button")
        page.wait_for_selector("#who:has-text('rita (reviewer)')")
        page.wait_for_selector("#queue[data-total='40']")
        page.click("tr.campaign[data-campaign='c1']")
        page.wait_for_selector("#campaign-detail:has-text('30 pending of 30 events')")
        page.click("#bulk-approve")  # no note yet: refused on the page
        page.wait_for_selector("#status:has-text('note')")
        assert store.unsent() == []
        page.fill("#note", "verified with the partner team")
        page.click("#bulk-approve")
        page.wait_for_selector("#status:has-text('approved 30 events of campaign c1')")
        page.click("#all")
        page.wait_for_selector("#queue[data-total='10']")
        page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
        browser.close()
    assert len(store.unsent()) == 30
    assert store.audit()[0]["note"] == "verified with the partner team"


def test_hostile_event_text_is_shown_not_run(served):
    url, token, store = served
    from review_support import held

    from streamguard.pipeline import TickResult

    store.add_tick(TickResult([held(999, "c2", item_id="<img src=x onerror=alert(1)>")]))
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=FLAGS, ignore_default_args=["--headless"]
        )
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(url)
        page.fill("#token", token)
        page.click("#login-button")
        page.wait_for_selector("tr.campaign[data-campaign='c2']")
        page.click("tr.campaign[data-campaign='c2']")
        page.wait_for_selector("#queue tr[data-event='e999']")
        assert "<img src=x onerror=alert(1)>" in page.inner_text("#queue")
        assert page.locator("#queue img").count() == 0
        browser.close()
    assert dialogs == []
