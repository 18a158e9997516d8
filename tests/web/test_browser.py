"""The console in a real browser: Debian's headless Chromium driven by Selenium through
the system's chromedriver (nothing is downloaded), against a journal filled by a
sandbox batch through two bundled plugins' emulators, with replies lost on the way
(UNKNOWN) and refunds the gateways settle later (PENDING).

Screenshots of each page are saved in the test's tmp dir. With
``REFUNDCORE_SCREENSHOTS=DIR`` (``make screenshots``) the README's two are also
written there. ``REFUNDCORE_SKIP_BROWSER=1`` skips the test.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from refundcore import Money, RefundClient, RefundStatus
from refundcore.batch import BatchRow
from refundcore.journal import JournalState
from refundcore.sandbox import Fault, SandboxRun
from refundcore.web import console_app
from refundcore.web.security import token_gate
from refundcore.web.serve import ConsoleServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PROVIDERS = ("wonder", "paywizard")
OPERATOR = "alice.ops"
TOKEN = "browser-test-token-" + "k" * 24
WIDTH = 1280

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def webdriver_module() -> Any:
    if os.environ.get("REFUNDCORE_SKIP_BROWSER") == "1":
        pytest.skip("REFUNDCORE_SKIP_BROWSER=1: browser test skipped on request")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver: "
            "apt-get install chromium chromium-driver (make does it as root), "
            "or set REFUNDCORE_SKIP_BROWSER=1"
        )
    from selenium import webdriver

    return webdriver


@pytest.fixture
def browser(webdriver_module: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    # Both paths are given, so Selenium Manager is not needed; offline, it could not
    # download a browser or a driver even if it tried.
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver_module.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI; the page is our own, on loopback
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},900",
        "--force-device-scale-factor=1",
        "--lang=en-GB",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver_module.Chrome(
        service=Service(executable_path=str(CHROMEDRIVER)), options=options
    )
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[tuple[RefundClient, dict[str, SandboxRun]]]:
    """A journalling client and the emulators of two bundled plugins, serving it."""
    client = RefundClient(journal=f"sqlite:///{tmp_path / 'journal.db'}")
    runs = {provider: SandboxRun(provider, client=client, read_timeout=2) for provider in PROVIDERS}
    for run in runs.values():
        run.start()
    try:
        yield client, runs
    finally:
        for run in runs.values():
            run.emulator.close()
            run.server.stop()
            run.receiver_server.stop()
        client.close()


def _rows(run: SandboxRun, count: int, *, pending: int = 0, declined: int = 0) -> list[BatchRow]:
    """Refunds of fresh payments: the first two the gateway refunds at once, then
    ``pending`` it settles later, then ``declined`` ask for more than the payment."""
    rows = []
    for index in range(count):
        later = 2 <= index < 2 + pending
        payment = run.emulator.seed_payment(
            Money("100.00", "HKD"),
            refund_outcome=RefundStatus.PENDING if later else RefundStatus.SUCCEEDED,
        )
        too_much = 2 + pending <= index < 2 + pending + declined
        rows.append(
            BatchRow(
                provider=run.provider,
                payment_id=payment.payment_id,
                merchant_reference=payment.merchant_reference,
                transaction_id=payment.transaction_id,
                amount=Money("150.00" if too_much else f"{12 + index}.50", "HKD"),
                reason="damaged in transit" if index % 2 else "customer cancelled",
            )
        )
    return rows


def _fill(client: RefundClient, runs: dict[str, SandboxRun]) -> None:
    rows = []
    for run in runs.values():
        # The first two requests reach the gateway, which refunds, but the replies are
        # lost: UNKNOWN until someone asks.
        run.server.inject("*", Fault(drop=True, times=2))
        rows += _rows(run, 9, pending=2, declined=1)
    report = client.refund_many(rows, workers=1)
    counts = report.counts
    assert (counts["UNKNOWN"], counts["PENDING"], counts["FAILED"]) == (4, 4, 2), counts
    for run in runs.values():
        run.server.clear_faults()


def _shot(driver: Any, folder: Path, name: str) -> Path:
    """The whole page as a PNG, however tall (DevTools can shoot past the window)."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": WIDTH, "height": min(size["height"], 3000), "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "clip": clip, "captureBeyondViewport": True}
    )
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def _history(driver: Any) -> list[tuple[str, str]]:
    """The refund page's history: each event's kind and what happened, oldest first."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")
    return [
        (cells[2].text, cells[3].text)
        for cells in (row.find_elements(By.TAG_NAME, "td") for row in rows)
    ]


def _no_console_errors(driver: Any) -> None:
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], "the page logged errors (a CSP violation would be one)"


def test_an_operator_finds_and_settles_what_is_stuck(
    browser: Any, sandboxes: tuple[RefundClient, dict[str, SandboxRun]], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    client, runs = sandboxes
    _fill(client, runs)
    journal = client.journal
    assert journal is not None
    app = console_app(
        journal,
        client,
        operator=lambda environ: OPERATOR,
        pending_after=timedelta(seconds=1),
    )
    server = ConsoleServer.bind(token_gate(app, TOKEN), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    time.sleep(1.1)  # the PENDING refunds are now past the console's threshold
    try:
        # The overview, after the token is traded for a cookie.
        browser.get(f"{server.url}/?token={TOKEN}")
        assert browser.current_url == f"{server.url}/", "the token left the address"
        assert browser.find_element(By.ID, "operator").text == OPERATOR
        counts = browser.find_element(By.ID, "counts")
        for provider in PROVIDERS:
            row = counts.find_element(By.XPATH, f".//tr[th/a[text()='{provider}']]")
            cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            # SUBMITTING, PENDING, SUCCEEDED, FAILED, UNKNOWN, NOT_SENT, all
            assert cells == ["0", "2", "4", "1", "2", "0", "9"], (provider, cells)
        assert browser.find_element(By.ID, "attention-count").text == "8"
        _no_console_errors(browser)
        overview = _shot(browser, shots, "overview")

        # Filter the refunds: UNKNOWN ones of one provider.
        browser.find_element(By.LINK_TEXT, "Refunds").click()
        form = browser.find_element(By.ID, "filters")
        Select(form.find_element(By.NAME, "status")).select_by_visible_text("UNKNOWN")
        # PayWizard finds a refund by its refund id: a query settles the lost one.
        Select(form.find_element(By.NAME, "provider")).select_by_visible_text("paywizard")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(browser, 10).until(lambda d: "status=UNKNOWN" in d.current_url)
        states = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "table.refunds .state")]
        assert states == ["UNKNOWN", "UNKNOWN"]
        _shot(browser, shots, "refunds")

        # Open one: every field, the stored reply.
        link = browser.find_element(By.CSS_SELECTOR, "table.refunds tbody tr td a")
        refund_id = link.text
        link.click()
        WebDriverWait(browser, 10).until(lambda d: "/refund?" in d.current_url)
        assert refund_id in browser.find_element(By.TAG_NAME, "h1").text
        fields = browser.find_element(By.ID, "fields").text
        assert "UNKNOWN" in fields and "connection to paywizard dropped" in fields
        _shot(browser, shots, "refund")

        # Ask the gateway: the refund it did make settles as SUCCEEDED.
        browser.find_element(By.XPATH, "//button[text()='Query the gateway now']").click()
        WebDriverWait(browser, 10).until(lambda d: "done=queried" in d.current_url)
        assert "answered SUCCEEDED" in browser.find_element(By.ID, "done").text
        entry = journal.get("paywizard", refund_id)
        assert entry is not None and entry.state is JournalState.SUCCEEDED
        _shot(browser, shots, "refund-queried")

        # The attention queue has one less; query another from there.
        browser.find_element(By.LINK_TEXT, "Attention").click()
        queue = browser.find_element(By.ID, "attention")
        assert len(queue.find_elements(By.CSS_SELECTOR, "tbody tr")) == 7
        _shot(browser, shots, "attention")
        queue.find_element(
            By.XPATH, ".//tr[td/span[text()='UNKNOWN'] and td[text()='paywizard']]//button"
        ).click()
        WebDriverWait(browser, 10).until(lambda d: "done=queried" in d.current_url)
        assert "answered SUCCEEDED" in browser.find_element(By.ID, "done").text
        queue = browser.find_element(By.ID, "attention")
        assert len(queue.find_elements(By.CSS_SELECTOR, "tbody tr")) == 6

        # Wonder's lost refunds: open one and resolve it through the form; the decision
        # joins the refund's history, under the operator's name.
        browser.find_element(By.LINK_TEXT, "Refunds").click()
        form = browser.find_element(By.ID, "filters")
        Select(form.find_element(By.NAME, "status")).select_by_visible_text("UNKNOWN")
        Select(form.find_element(By.NAME, "provider")).select_by_visible_text("wonder")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(browser, 10).until(lambda d: "provider=wonder" in d.current_url)
        link = browser.find_element(By.CSS_SELECTOR, "table.refunds tbody tr td a")
        lost = link.text
        link.click()
        WebDriverWait(browser, 10).until(lambda d: "/refund?" in d.current_url)
        history = _history(browser)
        assert [kind for kind, _ in history] == ["claim", "send", "answer"], history
        resolve = browser.find_element(By.ID, "resolve")
        resolve.find_element(By.CSS_SELECTOR, "input[name=as][value=succeeded]").click()
        reason = "Wonder's portal shows the refund, 10 HKD"
        resolve.find_element(By.NAME, "reason").send_keys(reason)
        resolve.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(browser, 10).until(lambda d: "done=resolved" in d.current_url)
        assert (
            "Resolved: decided SUCCEEDED by alice.ops" in browser.find_element(By.ID, "done").text
        )
        assert _history(browser) == [
            *history,
            ("decision", f"decided SUCCEEDED by {OPERATOR}: {reason}"),
        ]
        assert not browser.find_elements(By.ID, "resolve"), "nothing left to resolve"
        entry = journal.get("wonder", lost)
        assert entry is not None and entry.state is JournalState.SUCCEEDED
        assert entry.decided_by == OPERATOR
        _no_console_errors(browser)
        resolved_page = _shot(browser, shots, "refund-resolved")
        browser.find_element(By.LINK_TEXT, "Attention").click()
        queue = browser.find_element(By.ID, "attention")
        assert len(queue.find_elements(By.CSS_SELECTOR, "tbody tr")) == 5

        # A batch running now: its progress bar moves without a reload.
        slow = runs["paywizard"]
        slow.server.inject("*", Fault(delay=0.4))
        rows = _rows(slow, 10)
        running = threading.Thread(target=client.refund_many, args=(rows,), kwargs={"workers": 1})
        running.start()
        deadline = time.monotonic() + 10
        while len(journal.batches()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        browser.find_element(By.LINK_TEXT, "Batches").click()
        browser.execute_script("window.notReloaded = true")
        newest = browser.find_element(By.CSS_SELECTOR, "#batches tbody tr progress")
        assert int(newest.get_attribute("value")) < 10
        WebDriverWait(browser, 20).until(
            lambda d: (
                newest.get_attribute("value") == "10"
                and "10 / 10 done" in d.find_element(By.CSS_SELECTOR, "[data-batch-text]").text
            )
        )
        assert browser.execute_script("return window.notReloaded") is True
        running.join(10)
        _no_console_errors(browser)
        _shot(browser, shots, "batches")
        browser.find_element(By.CSS_SELECTOR, "#batches tbody tr td a").click()
        assert len(browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")) == 10
        _shot(browser, shots, "batch")
    finally:
        server.shutdown()
        server.server_close()

    assert sorted(p.name for p in shots.iterdir()) == [
        "attention.png",
        "batch.png",
        "batches.png",
        "overview.png",
        "refund-queried.png",
        "refund-resolved.png",
        "refund.png",
        "refunds.png",
    ]
    published = os.environ.get("REFUNDCORE_SCREENSHOTS")
    if published:
        published_shots = (
            (overview, "console-overview.png"),
            (resolved_page, "console-refund.png"),
        )
        for shot, name in published_shots:
            shutil.copyfile(shot, Path(published) / name)
