"""The dashboard in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven over WebDriver against a real `spool serve`, plus its session and
security headers over plain HTTP."""
import json
import os
import pathlib
import shutil
import time

import httpx
import pytest

import subprocess

from conftest import ADMIN, CLIENT, OTHER, ROOT, free_port, skip_or_fail, spool_binary, spool_server

pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def chrome():
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        skip_or_fail("chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)")
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a browser or a driver
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout=15, message=""):
    # The page re-renders on every burst of events: an element found a moment ago may be gone.
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(d))
    except TimeoutException:
        pytest.fail(f"timed out: {message}\npage text:\n{text(driver, 'body')[:2000]}")


def find(driver, css):
    elements = driver.find_elements(By.CSS_SELECTOR, css)
    return elements[0] if elements else None


def texts(driver, css):
    """The text of every element matching `css`, read at one moment (no stale elements)."""
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText)", css)


def text(driver, css):
    found = texts(driver, css)
    return found[0] if found else ""


def summaries(driver) -> int:
    """How many summaries the page got on its event stream."""
    return int(driver.execute_script("return document.body.dataset.summaries || '0'"))


def click(driver, css):
    """Clicks the element matching `css` as it is now."""
    assert driver.execute_script("const e = document.querySelector(arguments[0]); if (!e) return false; e.click(); return true", css), css


def log_in(driver, server, token):
    driver.get(server.url + "/dashboard/")
    # The page asks for its session first: then it shows either the login form or who is in.
    state = wait(driver, lambda d: "form" if find(d, "#token") else ("in" if "live" in text(d, "#live") else None),
                 message="the login form or a session")
    if state == "in":
        click(driver, "#logout")
    field = wait(driver, lambda d: find(d, "#token"), message="the login form")
    field.send_keys(token)
    click(driver, "#login")
    wait(driver, lambda d: find(d, "#token") is None and "live" in text(d, "#live"), message="logged in with a live event stream")


def enqueue(server, body, token=ADMIN):
    response = httpx.post(server.url + "/v1/jobs", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def job(server, job_id, token=ADMIN):
    return httpx.get(f"{server.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()


def test_login_live_jobs_and_failed_job_detail(server, chrome):
    log_in(chrome, server, ADMIN)
    chrome.get(server.url + "/dashboard/#/jobs")
    wait(chrome, lambda d: find(d, "form.filters"), message="the jobs page")
    # Enqueued over the API: the page hears of it on its event stream (the page counts the
    # summaries it gets, so this cannot be its 10-second re-read) and shows the row, no reload.
    before = summaries(chrome)
    job_id = enqueue(server, {"kind": "demo.flaky", "payload": {"always": True}, "max_attempts": 2, "tags": ["browser"]})
    wait(chrome, lambda d: summaries(d) > before, message="a summary on the event stream")
    wait(chrome, lambda d: find(d, f'tr[data-job="{job_id}"]'), message="the new job's row")
    DOCS.mkdir(exist_ok=True)
    # Its detail page lists every attempt's error once it failed for good.
    deadline = time.monotonic() + 30
    while job(server, job_id)["state"] != "failed":
        assert time.monotonic() < deadline, "the flaky job did not fail in time"
        time.sleep(0.2)
    chrome.get(f"{server.url}/dashboard/#/jobs/{job_id}")
    wait(chrome, lambda d: len(texts(d, "#errors tbody tr")) == 2, message="two attempts' errors")
    rows = texts(chrome, "#errors tbody tr")
    assert "attempt 1" in rows[0] and "attempt 2" in rows[1], rows
    assert "failed" in text(chrome, "#job-state")
    chrome.set_window_size(1280, 1500)
    chrome.save_screenshot(str(DOCS / "dashboard-job.png"))
    chrome.set_window_size(1280, 900)
    # Retry from the page: the job leaves `failed`.
    click(chrome, "#retry")
    wait(chrome, lambda d: "failed" not in text(d, "#job-state"), message="the state after retry")
    retried = job(server, job_id)
    assert retried["state"] in ("pending", "scheduled", "processing", "failed") and len(retried["errors"]) >= 2, retried
    # The overview's charts count what ran (this process's figures of the current minute).
    for n in range(20):
        enqueue(server, {"kind": "demo.sleep", "payload": {"seconds": 0.05 * (n % 4)}, "queue": "default"})
    chrome.get(server.url + "/dashboard/#/")
    wait(chrome, lambda d: "completed" in text(d, "#throughput-hour + .legend") and
         int(text(d, "#throughput-hour + .legend").split("completed ")[1].split()[0].replace(",", "")) >= 1,
         timeout=30, message="the hour chart counting completed jobs")
    chrome.set_window_size(1280, 1300)
    chrome.save_screenshot(str(DOCS / "dashboard-overview.png"))
    chrome.set_window_size(1280, 900)


def test_pause_and_resume_a_queue(server, chrome):
    log_in(chrome, server, ADMIN)
    chrome.get(server.url + "/dashboard/#/queues")
    pause = 'tr[data-queue="default"] button.pause'
    wait(chrome, lambda d: text(d, pause) == "Pause", message="the default queue's pause button")
    click(chrome, pause)
    wait(chrome, lambda d: text(d, pause) == "Resume", message="paused")
    queue = httpx.get(server.url + "/v1/queues/default", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert queue["paused"] is True
    click(chrome, pause)
    wait(chrome, lambda d: text(d, pause) == "Pause", message="resumed")
    queue = httpx.get(server.url + "/v1/queues/default", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert queue["paused"] is False


def test_a_tenant_sees_only_its_own_jobs(server, chrome):
    acme = enqueue(server, {"kind": "demo.sleep", "payload": {"seconds": 0}}, token=CLIENT)
    log_in(chrome, server, OTHER)
    chrome.get(server.url + "/dashboard/#/jobs")
    wait(chrome, lambda d: find(d, "#jobs") or "No jobs match" in text(d, "main"), message="globex's jobs")
    assert find(chrome, f'tr[data-job="{acme}"]') is None
    chrome.get(f"{server.url}/dashboard/#/jobs/{acme}")
    wait(chrome, lambda d: "not found" in text(d, "main"), message="acme's job refused to globex")
    assert find(chrome, "#payload") is None


def test_script_in_a_job_shows_as_text(server, chrome):
    script = "<script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 2\">"
    job_id = enqueue(server, {"kind": "demo.sleep", "payload": {"seconds": 0, "note": script},
                              "tags": ["<img src=x onerror=alert(1)>"], "idempotency_key": "<b>bold</b>"})
    log_in(chrome, server, ADMIN)
    chrome.get(f"{server.url}/dashboard/#/jobs/{job_id}")
    wait(chrome, lambda d: find(d, "#payload"), message="the payload")
    assert json.dumps(script) in text(chrome, "#payload")  # pretty-printed JSON, as text
    assert "<img src=x onerror=alert(1)>" in text(chrome, "main")
    assert chrome.find_elements(By.CSS_SELECTOR, "main img, main script, main b") == []
    assert chrome.execute_script("return window.__xss === undefined")


def test_jobs_page_with_a_million_finished_jobs(tmp_path, chrome):
    seeded = subprocess.run([str(spool_binary()), "seed", "--database", str(tmp_path / "spool.sqlite"), "--finished", "1000000"],
                            capture_output=True, text=True, timeout=600)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    with spool_server(tmp_path) as big:
        log_in(chrome, big, ADMIN)
        chrome.get(big.url + "/dashboard/#/workers")
        wait(chrome, lambda d: "Workers" in text(d, "main"), message="another page first")
        # First paint of the jobs page: from navigation to a full page of rows in the table.
        timings = []
        for _ in range(3):
            chrome.get("about:blank")  # a whole page load each time, not a hash change
            started = time.monotonic()
            chrome.get(big.url + "/dashboard/#/jobs")
            wait(chrome, lambda d: len(texts(d, "#jobs tbody tr")) == 50, message="50 rows of 1,000,000")
            timings.append(time.monotonic() - started)
        # The next page is a cursor page: as fast as the first.
        chrome.get(big.url + "/dashboard/#/jobs")
        wait(chrome, lambda d: len(texts(d, "#jobs tbody tr")) == 50, message="the first page")
        first = text(chrome, "#jobs tbody tr")
        click(chrome, "#older")
        wait(chrome, lambda d: len(texts(d, "#jobs tbody tr")) == 50 and text(d, "#jobs tbody tr") != first, message="the second page")
        timings.sort()
        print(f"jobs page first paint with 1,000,000 finished jobs: median {timings[1]:.3f} s ({', '.join(f'{t:.3f}' for t in timings)})")
        assert timings[1] < 1.0, timings


def test_a_dropped_stream_reconnects_and_says_so(tmp_path, chrome):
    # Token-less (no login; sessions would not survive the restart): the page follows the
    # stream, the server restarts on the same port and database, the page says it reconnected
    # and resumed, and a job enqueued after the restart appears without a reload.
    port = free_port()
    with spool_server(tmp_path, port=port, tokens=None) as local:
        chrome.get(local.url + "/dashboard/#/jobs")
        wait(chrome, lambda d: text(d, "#live") == "live", message="the live stream")
        assert find(chrome, "#token") is None and "no tokens" in text(chrome, "#who")
    wait(chrome, lambda d: "reconnecting" in text(d, "#live"), message="the page noticing the drop")
    with spool_server(tmp_path, port=port, tokens=None) as local:
        wait(chrome, lambda d: "reconnected" in text(d, "#live"), timeout=30, message="the page reconnecting")
        before = summaries(chrome)
        job_id = enqueue(local, {"kind": "demo.sleep", "payload": {"seconds": 0}})
        wait(chrome, lambda d: summaries(d) > before, message="a summary on the new stream")
        wait(chrome, lambda d: find(d, f'tr[data-job="{job_id}"]'), message="a job after the restart")


def test_the_summary_stream_counts_what_changed(server):
    # What the page listens to: one message per interval at most, counting events per queue.
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(10, read=30)) as client:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        assert client.get("/v1/events/summary?interval_ms=5", headers=headers).status_code == 422
        with client.stream("GET", "/v1/events/summary?interval_ms=300&queue=default", headers=headers) as stream:
            for _ in range(5):
                enqueue(server, {"kind": "demo.sleep", "payload": {"seconds": 0}})
            summaries, deadline = [], time.monotonic() + 10
            data = None
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    summaries.append(json.loads(line[6:]))
                    data = summaries[-1]
                if sum(s["queues"].get("default", {}).get("completed", 0) for s in summaries) >= 5 or time.monotonic() > deadline:
                    break
        assert data is not None, "no summary"
        assert sum(s["queues"]["default"].get("completed", 0) for s in summaries if "default" in s["queues"]) >= 5, summaries
        assert all(s["events"] == sum(sum(v.values()) for v in s["queues"].values()) for s in summaries)


def test_session_cookie_csrf_and_headers(server):
    with httpx.Client(base_url=server.url, timeout=10) as client:
        page = client.get("/dashboard/")
        assert page.status_code == 200 and "app.js" in page.text
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard/"
        assert client.get("/v1/session").status_code == 401
        assert client.post("/v1/session", json={"token": "wrong"}).status_code == 401
        login = client.post("/v1/session", json={"token": CLIENT})
        assert login.status_code == 200, login.text
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=" in cookie
        session = login.json()
        assert session["tenant"] == "acme" and session["csrf_token"]
        # The cookie reads; a change without the CSRF token is refused, with it allowed.
        assert client.get("/v1/jobs").status_code == 200
        refused = client.post("/v1/jobs", json={"kind": "demo.sleep", "payload": {"seconds": 0}})
        assert refused.status_code == 403 and refused.json()["type"].endswith("csrf")
        accepted = client.post("/v1/jobs", json={"kind": "demo.sleep", "payload": {"seconds": 0}},
                               headers={"X-CSRF-Token": session["csrf_token"]})
        assert accepted.status_code == 202
        # Two session cookies (one planted by a neighbouring site): neither is used.
        planted = httpx.get(server.url + "/v1/jobs", timeout=10, headers={
            "Cookie": f"spool_session=planted; spool_session={login.cookies['spool_session']}"})
        assert planted.status_code == 401
        # Another site's page cannot use the cookie (the cross-site guard), even with a token.
        assert client.post("/v1/jobs", json={"kind": "demo.sleep"}, headers={
            "X-CSRF-Token": session["csrf_token"], "Origin": "https://evil.example"}).status_code == 403
        # Log out: the session is gone.
        assert client.delete("/v1/session", headers={"X-CSRF-Token": session["csrf_token"]}).status_code == 204
        client.cookies.clear()
        client.cookies.set("spool_session", login.cookies["spool_session"])
        assert client.get("/v1/jobs").status_code == 401
