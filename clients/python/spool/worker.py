"""Runs jobs over the worker protocol: lease (long poll), heartbeat, report in batches."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .client import VERSION as __version__, Client
from .errors import InvalidRequest, LeaseLost, SpoolError, Unauthorized, Forbidden, Unavailable

log = logging.getLogger("spool.worker")
Handler = Callable[[Any, "JobContext"], Any]


class Retry(Exception):
    """Raise from a handler to fail this attempt and retry after ``after`` seconds (instead of
    the queue's backoff), if attempts are left."""

    def __init__(self, message: str = "retry requested", after: Optional[float] = None):
        super().__init__(message)
        self.after = after


class Fail(Exception):
    """Raise from a handler to fail the job for good, whatever attempts are left."""


class JobContext:
    """What a handler knows about its job, and how it reports progress.

    ``stopped`` becomes true when the attempt no longer counts (its lease was lost, the job was
    cancelled, its deadline passed, or the worker is shutting down past its grace period): a
    long handler should check it and return early; whatever it returns then is ignored.
    """

    def __init__(self, worker: "Worker", document: Dict[str, Any]):
        self._worker = worker
        self.id: str = document["id"]
        self.kind: str = document["kind"]
        self.queue: str = document["queue"]
        self.tenant: str = document["tenant"]
        self.attempt: int = document["attempt"]
        self.max_attempts: int = document["max_attempts"]
        self.priority: int = document.get("priority", 0)
        self.tags: List[str] = document.get("tags", [])
        self.idempotency_key: Optional[str] = document.get("idempotency_key")
        self.payload: Any = document.get("payload")
        #: The job's parents (``depends_on``): ``[{"id", "kind", "state", "result"}]``.
        self.parents: List[Dict[str, Any]] = document.get("parents") or []
        self.batch_id: Optional[str] = document.get("batch_id")
        self.timeout_seconds: float = float(document["timeout_seconds"])
        self.lease_token: str = document["lease_token"]
        self.deadline: float = time.monotonic() + self.timeout_seconds  # reset when the handler starts
        self._stopped = threading.Event()
        self.done = False

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def progress(self, percent: float, message: Optional[str] = None) -> None:
        """Records the job's progress (0-100) for whoever follows it."""
        body: Dict[str, Any] = {"lease_token": self.lease_token, "percent": percent}
        if message is not None:
            body["message"] = message
        try:
            self._worker._client._call("POST", f"/v1/worker/jobs/{self.id}/progress", json=body)
        except LeaseLost:
            self._stopped.set()
        except SpoolError as error:  # progress is best effort: the job goes on
            log.warning("progress of job %s not recorded: %s", self.id, error)


class Worker:
    """Runs the jobs of the kinds it has handlers for, from the given queues.

    :param url: the gateway; :param token: a token with the ``worker`` scope (its tenant's jobs
        only)
    :param concurrency: handlers running at once (threads)
    :param grace_seconds: on shutdown, how long running handlers get to finish before their
        jobs are given back to the queue (attempt not counted)
    """

    def __init__(self, url: str, token: Optional[str] = None, *, queues: Sequence[str] = ("default",),
                 concurrency: int = 10, worker_id: Optional[str] = None, wait_seconds: float = 5.0,
                 grace_seconds: float = 25.0, max_batch: int = 100, name: Optional[str] = None):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.queues = list(queues)
        self.concurrency = concurrency
        self.worker_id = worker_id or f"py:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.name = name or os.path.basename(sys.argv[0] or "python") or "python"
        self.wait_seconds = wait_seconds
        self.grace_seconds = grace_seconds
        self.max_batch = max_batch
        self._client = Client(url, token, timeout=max(30.0, wait_seconds + 10))
        self._handlers: Dict[str, Handler] = {}
        # Attempts under way (heartbeated); handler threads busy (a timed-out handler keeps its
        # thread: Python cannot stop it); outcomes queued or being sent (still heartbeated, so
        # that a slow report cannot lose the lease of a finished job).
        self._running: Dict[str, JobContext] = {}
        self._busy = 0
        self._unreported: Dict[str, JobContext] = {}
        self._lock = threading.Condition()
        self._outcomes: List[Tuple[str, Dict[str, Any]]] = []  # ("complete" | "fail", item)
        self._reporting = 0
        self._stopping = threading.Event()
        self._heartbeat_seconds = 10.0
        self.completed = 0
        self.failed = 0

    # -- handlers ------------------------------------------------------------------------

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        """Decorator: ``@worker.handler("email.send")`` over ``def send(payload, job): ...``."""
        def register(fn: Handler) -> Handler:
            self.register(kind, fn)
            return fn
        return register

    def register(self, kind: str, fn: Handler) -> None:
        self._handlers[kind] = fn

    # -- running -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops leasing; :meth:`run` returns once running jobs finished or were given back."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()

    def run(self, install_signal_handlers: bool = True) -> None:
        """Runs until :meth:`stop`, SIGTERM or SIGINT."""
        if not self._handlers:
            raise ValueError("register at least one handler before run()")
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        log.info("worker %s started: queues %s, kinds %s", self.worker_id, self.queues, sorted(self._handlers))
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="spool-job")
        threads = [threading.Thread(target=self._report_loop, name="spool-report", daemon=True),
                   threading.Thread(target=self._heartbeat_loop, name="spool-heartbeat", daemon=True)]
        for thread in threads:
            thread.start()
        try:
            self._lease_loop(pool)
        finally:
            self._stopping.set()  # also when leasing failed for good (a token without the scope)
            self._drain()
            pool.shutdown(wait=False)
            with self._lock:
                self._lock.notify_all()
            for thread in threads:
                thread.join(timeout=30)
            try:  # leaves the registry rather than showing as lost
                self._client._call("POST", "/v1/worker/heartbeat",
                                   json={"worker_id": self.worker_id, "leases": [], "stopped": True})
            except SpoolError:
                pass
            self._client.close()
            log.info("worker %s stopped", self.worker_id)

    def _lease_loop(self, pool: ThreadPoolExecutor) -> None:
        delay = 0.1
        kinds = sorted(self._handlers)
        while not self._stopping.is_set():
            with self._lock:
                while self._busy >= self.concurrency and not self._stopping.is_set():
                    self._lock.wait()
                free = self.concurrency - self._busy
            if self._stopping.is_set():
                return
            body = {"worker_id": self.worker_id, "queues": self.queues, "kinds": kinds,
                    "max_jobs": min(free, self.max_batch), "wait_seconds": self.wait_seconds,
                    # For the registry (GET /v1/workers, spool workers).
                    "name": self.name, "host": socket.gethostname()[:200] or None, "pid": os.getpid(),
                    "version": f"spool-python/{__version__}", "concurrency": self.concurrency}
            try:
                answer = self._client._call("POST", "/v1/worker/lease", json=body).json()
                delay = 0.1
            except (Unavailable, SpoolError) as error:
                if isinstance(error, (InvalidRequest, Unauthorized, Forbidden)):
                    raise
                log.warning("leasing failed (%s); retrying in %.1fs", error, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._heartbeat_seconds = float(answer.get("heartbeat_seconds", 10))
            for document in answer["jobs"]:
                job = JobContext(self, document)
                with self._lock:
                    self._running[job.id] = job
                    self._busy += 1
                pool.submit(self._run_one, job)

    def _run_one(self, job: JobContext) -> None:
        try:
            if not job.done:  # not given back while it waited for its thread
                job.deadline = time.monotonic() + job.timeout_seconds
                self._finish(job, self._attempt(job))
        finally:
            with self._lock:
                self._busy -= 1
                self._lock.notify_all()

    def _attempt(self, job: JobContext) -> Tuple[str, Dict[str, Any]]:
        handler = self._handlers.get(job.kind)
        try:
            if handler is None:
                raise Fail(f"no handler for kind '{job.kind}' in this worker")
            result = handler(job.payload, job)
            return ("complete", {"job_id": job.id, "lease_token": job.lease_token, "result": result})
        except Retry as retry:
            return ("fail", {"job_id": job.id, "lease_token": job.lease_token, "error": str(retry) or "retry",
                                "retry_after_seconds": retry.after})
        except Fail as fail:
            return ("fail", {"job_id": job.id, "lease_token": job.lease_token, "error": str(fail) or "failed",
                                "retryable": False})
        except Exception as error:  # noqa: BLE001 - a handler's error is the job's failure
            return ("fail", {"job_id": job.id, "lease_token": job.lease_token,
                             "error": f"{type(error).__name__}: {error}"})

    def _finish(self, job: JobContext, outcome: Optional[Tuple[str, Dict[str, Any]]]) -> bool:
        """Ends the attempt and queues its report; False (and nothing done) when it had ended
        already (timed out, lease lost, given back)."""
        if outcome is not None and outcome[0] == "complete":
            try:
                json.dumps(outcome[1]["result"], allow_nan=False)
            except (TypeError, ValueError) as error:
                outcome = ("fail", {"job_id": job.id, "lease_token": job.lease_token, "retryable": False,
                                    "error": f"the handler's result is not JSON: {error}"})
        with self._lock:
            if job.done or self._running.get(job.id) is not job:
                return False
            job.done = True
            del self._running[job.id]
            if outcome is not None:
                self._outcomes.append(outcome)
                self._unreported[job.id] = job
            self._lock.notify_all()
            return True

    # -- reports -------------------------------------------------------------------------

    def _report_loop(self) -> None:
        delay = 0.1
        while True:
            with self._lock:
                while not self._outcomes and not (self._stopping.is_set() and not self._running):
                    self._lock.wait(timeout=0.5)
                if not self._outcomes:
                    return  # stopping, nothing running, nothing to report
                batch, self._outcomes = self._outcomes[:1000], self._outcomes[1000:]
                self._reporting += 1
            try:
                self._send(batch)
                delay = 0.1
            except Unavailable as error:
                log.warning("reporting failed (%s); retrying in %.1fs", error, delay)
                with self._lock:
                    self._outcomes[:0] = batch
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception:  # noqa: BLE001 - a bad answer must not end reporting
                log.exception("reporting failed; these jobs run again when their leases expire")
                self._reported([item for _, item in batch])
            finally:
                with self._lock:
                    self._reporting -= 1
                    self._lock.notify_all()

    def _send(self, batch: List[Tuple[str, Dict[str, Any]]]) -> None:
        for kind in ("complete", "fail"):
            items = [item for k, item in batch if k == kind]
            # Requests under the gateway's body limit (1 MiB by default), whatever the results weigh.
            chunk: List[Dict[str, Any]] = []
            size = 0
            for item in items:
                weight = len(json.dumps(item)) + 1
                if chunk and size + weight > 512 * 1024:
                    self._post(kind, chunk)
                    chunk, size = [], 0
                chunk.append(item)
                size += weight
            if chunk:
                self._post(kind, chunk)

    def _post(self, kind: str, items: List[Dict[str, Any]]) -> None:
        try:
            answer = self._client._call("POST", f"/v1/worker/{kind}", json={"jobs": items}).json()
        except Unavailable:
            raise
        except SpoolError as error:
            # Refused whole (one item too large, say): each alone, so only the bad one is lost
            # (its lease expires and it runs again).
            if len(items) > 1:
                for item in items:
                    self._post(kind, [item])
            else:
                log.error("report on job %s refused: %s", items[0].get("job_id"), error)
                self._reported(items)
            return
        self._reported(items)
        for result in answer["results"]:
            status = result.get("status")
            if status == "completed":
                self.completed += 1
            elif status in ("retried", "failed"):
                self.failed += 1
            else:
                log.warning("report on job %s refused: %s %s", result.get("job_id"), status, result.get("detail", ""))

    def _reported(self, items: List[Dict[str, Any]]) -> None:
        with self._lock:
            for item in items:
                self._unreported.pop(item["job_id"], None)

    # -- leases --------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        last = time.monotonic()
        while True:
            with self._lock:
                if self._stopping.is_set() and not self._running and not self._unreported and not self._outcomes:
                    return
            time.sleep(0.25)  # (not _stopping.wait: once stopping is set it returns at once)
            now = time.monotonic()
            with self._lock:
                running = list(self._running.values())
            for job in running:
                if now > job.deadline:
                    # Python cannot stop the thread; the attempt ends here, its result is ignored.
                    job._stopped.set()
                    self._finish(job, ("fail", {"job_id": job.id, "lease_token": job.lease_token, "timed_out": True,
                                                "error": f"attempt timed out after {job.timeout_seconds:g}s"}))
            if now - last < self._heartbeat_seconds:
                continue
            last = now
            with self._lock:
                held = [job for job in self._running.values() if not job.stopped] + list(self._unreported.values())
            lost = set()
            for start in range(0, max(len(held), 1), 1000):  # the gateway takes 1,000 leases a call
                try:
                    answer = self._client._call("POST", "/v1/worker/heartbeat", json={
                        "worker_id": self.worker_id,
                        "leases": [{"job_id": job.id, "lease_token": job.lease_token} for job in held[start:start + 1000]]}).json()
                    lost.update(answer.get("lost", []))
                except SpoolError as error:
                    log.warning("heartbeat failed: %s", error)
            for job in held:
                if job.id in lost and not job.done:
                    log.warning("lease of job %s lost; its outcome will be ignored", job.id)
                    job._stopped.set()
                    self._finish(job, None)

    def _drain(self) -> None:
        """Gives running handlers the grace period, then gives their jobs back."""
        deadline = time.monotonic() + self.grace_seconds
        with self._lock:
            while self._running and time.monotonic() < deadline:
                self._lock.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            left = list(self._running.values())
        for job in left:
            job._stopped.set()
            if not self._finish(job, None):
                continue  # it finished meanwhile: its report stands
            try:
                self._client._call("POST", f"/v1/worker/jobs/{job.id}/release", json={"lease_token": job.lease_token})
            except SpoolError as error:
                log.warning("could not give job %s back (%s); it runs again when its lease expires", job.id, error)
        with self._lock:
            while (self._outcomes or self._reporting) and time.monotonic() < deadline + 10:
                self._lock.wait(timeout=0.2)
