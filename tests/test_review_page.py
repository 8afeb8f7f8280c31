"""The review page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
driven by Selenium) on a real worker that has alerted on replayed credit-card frauds.

An analyst opens ``/review``, waits for the alert queue, types a name and clicks "Confirmed" on one
alert: the label must reach the ``feedback`` topic (read back with aiokafka), the worker's ``labels``
table (``/review/labels.json``) and the page, which shows the row as confirmed.

``make browser`` (a step of ``make test``) installs the browser with apt-get when it is missing; where it
cannot, this test skips with the reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import orjson
import pytest

from streamdetect.kafka.records import Alert, Feedback

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
#: written by ``make browser`` when it could not install the browser: why
SETUP_NOTE = Path(__file__).resolve().parents[1] / ".cache" / "browser-setup.txt"
ANALYST = "pytest-analyst"


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        note = SETUP_NOTE.read_text().strip() if SETUP_NOTE.exists() else "`make browser` was not run"
        return (f"{' and '.join(missing)} missing: `make browser` installs Debian's chromium and chromium-driver "
                f"with apt-get ({note})")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = browser_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true makes the browser test required")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    root = tmp_path_factory.mktemp("chromium")
    options = Options()
    options.binary_location = str(CHROMIUM)  # with the driver's path given too, Selenium Manager is never asked
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", f"--user-data-dir={root / 'profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER), log_output=str(root / "chromedriver.log")),
                              options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def alerting_worker(embedded_broker, creditcard_bundles, settings, creditcard, creditcard_split, tmp_path_factory):
    """A worker that has scored 300 normal rows and every fraud of the test split: its alerts."""
    from fixtures_worker import slice_with_frauds
    from streamdetect.feeds import get_feed
    from streamdetect.kafka.collect import collect_outputs
    from streamdetect.replay import key_from_field, send_messages
    from test_feedback import LiveWorker

    root = tmp_path_factory.mktemp("review-worker")
    registry = root / "registry"
    shutil.copytree(creditcard_bundles, registry)
    # Tansu only: the page and the learn flow do not depend on the broker; the feedback topic and the
    # labels table's changelog are tested on both brokers in test_feedback.py (make test's time budget)
    worker = LiveWorker.start_new(embedded_broker, registry, settings, root)
    try:
        events = get_feed("transactions").events_from_dataset(creditcard, slice_with_frauds(creditcard, creditcard_split, 300))
        since = int(time.time() * 1000)

        async def replay():
            await send_messages(worker.kafka, worker.settings.topics.transactions, [orjson.dumps(e) for e in events],
                                key=key_from_field(None), progress=False)
            return await collect_outputs(worker.kafka, worker.settings, expected=len(events), since_ms=since, timeout=90,
                                         event_ids={e["event_id"] for e in events}, progress=False)

        outputs = asyncio.run(replay())
        assert outputs.accounted() == len(events) and outputs.alerts, worker.log_tail()
        yield worker, outputs.alerts
    finally:
        worker.stop()


def feedback_records(worker) -> list:
    """Every record of the worker's ``feedback`` topic, read with a plain aiokafka consumer."""
    from aiokafka import AIOKafkaConsumer

    async def read():
        consumer = AIOKafkaConsumer(worker.settings.topics.feedback, **worker.kafka, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100)
        await consumer.start()
        try:
            out, idle = [], 0
            while idle < 3:
                batch = await consumer.getmany(timeout_ms=300)
                records = [r for rs in batch.values() for r in rs]
                out += records
                idle = 0 if records else idle + 1
            return out
        finally:
            await consumer.stop()

    return asyncio.run(read())


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_confirming_an_alert_in_the_browser_labels_it_everywhere(browser, alerting_worker, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    worker, alerts = alerting_worker
    alerts = [Alert.model_validate(a) for a in alerts]
    browser.get(f"http://127.0.0.1:{worker.port}/review")
    assert browser.title == "streamdetect: alert review"
    rows = WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-event-id] button.confirmed"),
                                            "an alert row with a Confirmed button")
    assert rows
    queue = worker.get("review/alerts.json")
    assert queue["labelled"] == 0 and {a["event_id"] for a in queue["alerts"]} == {a.event_id for a in alerts}
    WebDriverWait(browser, 10).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr[data-event-id]")) == len(queue["alerts"]), "every alert as a row")

    analyst = browser.find_element(By.ID, "analyst")
    analyst.clear()
    analyst.send_keys(ANALYST)
    event_id = queue["alerts"][0]["event_id"]  # the newest alert: the first row
    row = f'tr[data-event-id="{event_id}"]'
    for _ in range(50):  # the page redraws its rows every 2 s: a row found just before a redraw goes stale
        try:
            browser.find_element(By.CSS_SELECTOR, f"{row} button.confirmed").click()
            break
        except StaleElementReferenceException:
            time.sleep(0.1)
    else:
        raise AssertionError("the Confirmed button kept going stale")

    def shown_confirmed(driver):
        try:
            element = driver.find_element(By.CSS_SELECTOR, row)
            verdict = element.find_element(By.CSS_SELECTOR, "td.verdict")
            return "confirmed" in element.get_attribute("class").split() and verdict.text == "confirmed" and \
                not element.find_elements(By.TAG_NAME, "button")
        except StaleElementReferenceException:
            return False

    try:
        WebDriverWait(browser, 30).until(shown_confirmed, "the row shown as confirmed")
    finally:
        browser.save_screenshot(str(tmp_path / "review.png"))
    assert browser.find_element(By.ID, "status").text.startswith("sent confirmed for " + event_id) or \
        "1 labelled" in browser.find_element(By.ID, "status").text

    # the feedback topic: one record, keyed by the event id, as the page's analyst said
    records = [r for r in feedback_records(worker) if r.key == event_id.encode()]
    assert len(records) == 1, records
    sent = Feedback.model_validate(orjson.loads(records[0].value))
    assert (sent.event_id, sent.label, sent.analyst) == (event_id, "confirmed", ANALYST)

    # the worker's table, and the queue the page reads
    labels = worker.get("review/labels.json")
    assert set(labels) == {event_id}
    assert (labels[event_id]["label"], labels[event_id]["analyst"]) == ("confirmed", ANALYST)
    queue = worker.get("review/alerts.json")
    assert queue["labelled"] == 1
    assert [a["label"] for a in queue["alerts"] if a["event_id"] == event_id] == ["confirmed"]
    # the other rows still wait for a verdict
    others = browser.find_elements(By.CSS_SELECTOR, "tr[data-event-id] button.confirmed")
    assert len(others) == len(queue["alerts"]) - 1
