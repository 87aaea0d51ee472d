"""The Python SDK (clients/python) against a real `spool serve`: the client, the worker, a
Swift worker beside it, a worker killed mid-job, a gateway restart."""
import pathlib
import selectors
import subprocess
import sys
import threading
import time

import httpx
import pytest

import spool
from conftest import ADMIN, CLIENT, WORKER, free_port, spool_server

# Short leases, so that a dead worker's job is rescued within seconds (not so short that a slow
# heartbeat on a busy 2-core machine loses one).
FAST = ["--lease-seconds", "5", "--heartbeat-seconds", "1"]


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory):
    with spool_server(tmp_path_factory.mktemp("sdk"), extra_args=FAST) as server:
        yield server


def start(worker: spool.Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False}, daemon=True)
    thread.start()
    return thread


def enqueue_when_known(client: spool.Client, jobs: list, timeout: float = 15) -> list:
    """Enqueues once a remote worker has named the kinds (the gateway refuses unknown kinds)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.enqueue_many(jobs)
        except spool.InvalidRequest:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_all(client: spool.Client, ids: list, timeout: float = 120) -> dict:
    """Every job's document once all are finished."""
    deadline = time.monotonic() + timeout
    pending = set(ids)
    docs = {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending)[:200]:
            doc = client.get(job_id)
            if doc["state"] in ("completed", "failed", "cancelled"):
                docs[job_id] = doc
                pending.discard(job_id)
        if pending:
            time.sleep(0.2)
    assert not pending, f"{len(pending)} jobs never finished"
    return docs


def test_client_round_trip(sdk_server):
    with spool.Client(sdk_server.url, CLIENT) as client:
        job = client.enqueue("demo.noop", {"x": 1}, idempotency_key="sdk-1", tags=["sdk"])
        assert job["state"] == "pending" and not job["replayed"]
        again = client.enqueue("demo.noop", {"x": 1}, idempotency_key="sdk-1", tags=["sdk"])
        assert again["id"] == job["id"] and again["replayed"]
        done = client.wait(job["id"], timeout=30)
        assert done["state"] == "completed" and done["tags"] == ["sdk"]

        batch = client.enqueue_many([{"kind": "demo.noop"}, {"kind": "demo.noop", "priority": 5}])
        assert len(batch) == 2
        listed = {j["id"] for j in client.iterate(kind="demo.noop")}
        assert {job["id"], *(j["id"] for j in batch)} <= listed

        slow = client.enqueue("demo.sleep", {"seconds": 30})
        assert client.cancel(slow["id"])["state"] == "cancelled"
        assert client.wait(slow["id"], timeout=10)["state"] == "cancelled"
        assert client.retry(slow["id"])["state"] in ("pending", "processing")
        client.cancel(slow["id"])

        with pytest.raises(spool.NotFound) as missing:
            client.get("0190b1c2-0000-7000-8000-000000000000")
        assert missing.value.status == 404 and missing.value.short_type == "not-found"
        with pytest.raises(spool.InvalidRequest) as invalid:
            client.enqueue("demo.noop", queue="bad queue")
        assert invalid.value.short_type == "validation" and "queue" in invalid.value.detail
        with pytest.raises(spool.Unauthorized):
            spool.Client(sdk_server.url, "wrong").get(job["id"])


def test_python_and_swift_workers_share_a_queue(sdk_server):
    worker = spool.Worker(sdk_server.url, WORKER, concurrency=8, wait_seconds=1)

    @worker.handler("py.add")
    def add(payload, job):
        return {"sum": payload["a"] + payload["b"], "by": "python", "attempt": job.attempt}

    @worker.handler("py.upper")
    def upper(payload, job):
        job.progress(50) if payload["n"] % 100 == 0 else None
        return {"text": payload["text"].upper(), "by": "python"}

    thread = start(worker)
    try:
        with spool.Client(sdk_server.url, CLIENT) as client:
            jobs = [{"kind": "py.add", "payload": {"a": n, "b": 2 * n}} for n in range(500)]
            jobs += [{"kind": "py.upper", "payload": {"text": f"job {n}", "n": n}} for n in range(500)]
            jobs += [{"kind": "demo.noop", "payload": {"n": n}} for n in range(200)]
            ids = [j["id"] for j in enqueue_when_known(client, jobs[:1000])]
            ids += [j["id"] for j in client.enqueue_many(jobs[1000:])]
            docs = wait_all(client, ids)
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the worker did not stop"
    with spool.Client(sdk_server.url, ADMIN) as admin:
        assert worker.worker_id not in {w["id"] for w in admin.workers()}, "a stopped worker stays in the registry"
    for job_id, request in zip(ids, jobs):
        doc = docs[job_id]
        assert doc["state"] == "completed" and doc["attempt"] == 1, doc
        if request["kind"] == "py.add":
            assert doc["result"] == {"sum": 3 * request["payload"]["a"], "by": "python", "attempt": 1}
        elif request["kind"] == "py.upper":
            assert doc["result"] == {"text": request["payload"]["text"].upper(), "by": "python"}
        else:
            assert not (isinstance(doc.get("result"), dict) and doc["result"].get("by") == "python")
    assert worker.completed == 1000


KILLED_WORKER = """
import sys, time, spool
worker = spool.Worker(sys.argv[1], sys.argv[2], concurrency=1, wait_seconds=1)
@worker.handler("py.hang")
def hang(payload, job):
    print("started", job.id, job.lease_token, flush=True)
    time.sleep(120)
worker.run()
"""


def test_worker_killed_mid_job(sdk_server, tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(KILLED_WORKER)
    proc = subprocess.Popen([sys.executable, str(script), sdk_server.url, WORKER], stdout=subprocess.PIPE, text=True)
    try:
        with spool.Client(sdk_server.url, CLIENT) as client:
            job = enqueue_when_known(client, [{"kind": "py.hang", "max_attempts": 3}])[0]
            ready = selectors.DefaultSelector()
            ready.register(proc.stdout, selectors.EVENT_READ)
            assert ready.select(timeout=60), "the worker never started the job"
            line = proc.stdout.readline().split()
            assert line[:2] == ["started", job["id"]], line
            stale_token = line[2]
            with spool.Client(sdk_server.url, ADMIN) as admin:
                def entry():
                    return next((w for w in admin.workers() if w.get("pid") == proc.pid), None)
                listed = entry()
                assert listed and listed["state"] == "active" and listed["kinds"] == ["py.hang"], listed
                assert listed["version"].startswith("spool-python/") and listed["tenant"] == "acme"
                proc.kill()
                proc.wait(timeout=10)
                # Silent for longer than a lease: the registry shows it lost.
                deadline = time.monotonic() + 20
                while entry()["state"] != "lost" and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert entry()["state"] == "lost"

            second = spool.Worker(sdk_server.url, WORKER, concurrency=1, wait_seconds=1)
            second.register("py.hang", lambda payload, j: {"by": "second", "attempt": j.attempt})
            thread = start(second)
            try:
                done = client.wait(job["id"], timeout=60)
            finally:
                second.stop()
                thread.join(timeout=30)
            assert not thread.is_alive(), "the second worker did not stop"
            assert done["state"] == "completed" and done["result"] == {"by": "second", "attempt": 2}
            assert done["errors"][0]["reason"] == "lease_expired"
            assert done["errors"][0]["worker"] == listed["id"] and done["worker_id"] == second.worker_id

            late = httpx.post(f"{sdk_server.url}/v1/worker/jobs/{job['id']}/complete",
                              json={"lease_token": stale_token, "result": "late"},
                              headers={"Authorization": f"Bearer {WORKER}"})
            assert late.status_code == 409 and late.json()["type"] == "urn:spool:problem:lease-lost"
            assert client.get(job["id"])["result"] == {"by": "second", "attempt": 2}
    finally:
        if proc.poll() is None:
            proc.kill()


def test_gateway_restart_loses_nothing(tmp_path):
    port = free_port()
    worker = None
    thread = None
    try:
        with spool_server(tmp_path, port=port, extra_args=FAST) as server:
            worker = spool.Worker(server.url, WORKER, concurrency=4, wait_seconds=1)

            @worker.handler("py.step")
            def step(payload, job):
                time.sleep(0.05)
                return payload["n"]

            thread = start(worker)
            with spool.Client(server.url, CLIENT) as client:
                ids = [j["id"] for j in enqueue_when_known(client, [{"kind": "py.step", "payload": {"n": n}} for n in range(300)])]
                deadline = time.monotonic() + 60
                while worker.completed < 30 and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert worker.completed >= 30
        # The gateway is down now, with work left; the worker keeps retrying. Same database,
        # same port.
        assert worker.completed < 300, "everything finished before the restart: nothing was tested"
        time.sleep(1)
        with spool_server(tmp_path, port=port, extra_args=FAST) as server:
            with spool.Client(server.url, CLIENT) as client:
                docs = wait_all(client, ids, timeout=120)
        assert all(doc["state"] == "completed" for doc in docs.values())
        assert sorted(doc["result"] for doc in docs.values()) == list(range(300))
    finally:
        if worker is not None:
            worker.stop()
            thread.join(timeout=30)


def test_worker_without_the_worker_scope_is_refused(sdk_server):
    worker = spool.Worker(sdk_server.url, CLIENT)
    worker.register("py.nope", lambda payload, job: None)
    with pytest.raises(spool.Forbidden):
        worker.run(install_signal_handlers=False)


def test_python_worker_runs_a_dag_and_a_batch_callback(sdk_server):
    """A DAG created in one call through the SDK, run by a Python worker that reads its parents'
    results; then a batch whose callback job gets the batch's figures; then a fan-out publish."""
    worker = spool.Worker(sdk_server.url, WORKER, concurrency=4, wait_seconds=1)
    seen = {}

    @worker.handler("py.step")
    def step(payload, job):
        seen[payload["name"]] = [p["result"] for p in job.parents]
        return {"name": payload["name"], "parents": len(job.parents)}

    thread = start(worker)
    try:
        with spool.Client(sdk_server.url, CLIENT) as client:
            jobs = enqueue_when_known(client, [
                spool.job_request("py.step", {"name": "convert"}, ref="convert"),
                spool.job_request("py.step", {"name": "clash"}, ref="clash", depends_on=["convert"]),
                spool.job_request("py.step", {"name": "report"}, depends_on=["clash", "convert"]),
            ])
            assert [j["state"] for j in jobs] == ["pending", "waiting", "waiting"]
            docs = wait_all(client, [j["id"] for j in jobs], timeout=60)
            assert all(d["state"] == "completed" for d in docs.values()), docs
            assert seen["clash"] == [{"name": "convert", "parents": 0}]
            assert sorted(r["name"] for r in seen["report"]) == ["clash", "convert"]
            report = client.get(jobs[2]["id"])
            assert report["depends_on"] == [jobs[1]["id"], jobs[0]["id"]]

            created = client.create_batch(
                [spool.job_request("py.step", {"name": f"b{n}"}) for n in range(5)],
                callback={"kind": "py.step", "payload": {"name": "callback"}})
            batch_id = created["batch"]["id"]
            deadline = time.monotonic() + 60
            while client.batch(batch_id)["state"] != "finished" and time.monotonic() < deadline:
                time.sleep(0.1)
            batch = client.batch(batch_id)
            assert batch["state"] == "finished" and batch["counts"]["completed"] == 5, batch
            callback = wait_all(client, [batch["callback_job_id"]], timeout=60)[batch["callback_job_id"]]
            assert callback["payload"]["batch"]["total"] == 5 and callback["payload"]["batch"]["completed"] == 5
            assert callback["payload"]["payload"] == {"name": "callback"}

            published = client.publish("py.nobody", {"x": 1}, idempotency_key="e1")
            assert published["job_ids"] == [] and not published["replayed"]
            assert client.publish("py.nobody", {"x": 1}, idempotency_key="e1")["replayed"] is True
            with pytest.raises(spool.InvalidRequest):
                client.enqueue("py.step", {"name": "x"}, depends_on=["not-a-job-id"])
    finally:
        worker.stop()
        thread.join(timeout=30)
