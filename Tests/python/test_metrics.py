"""GET /metrics is Prometheus text that `promtool check metrics` accepts without a complaint."""
import shutil
import subprocess
import time

import httpx

from conftest import CLIENT, Server, skip_or_fail


def test_metrics_pass_promtool(server: Server):
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    with httpx.Client(base_url=server.url, headers=server.headers(CLIENT), timeout=10) as client:
        ids = []
        for _ in range(5):
            answer = client.post("/v1/jobs", json={"kind": "demo.noop"})
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        client.get("/v1/jobs/not-a-job-id")  # a 404 for the request metrics
        deadline = time.monotonic() + 20
        while any(client.get(f"/v1/jobs/{i}").json()["state"] != "completed" for i in ids):
            assert time.monotonic() < deadline, "the demo.noop jobs did not complete in 20 s"
            time.sleep(0.1)
        metrics = client.get("/metrics")
    assert metrics.status_code == 200
    check = subprocess.run([promtool, "check", "metrics"], input=metrics.text, capture_output=True, text=True)
    problems = (check.stdout + check.stderr).strip()
    assert check.returncode == 0 and not problems, f"promtool check metrics:\n{problems}"
