"""The HTTP API for programs that enqueue and follow jobs."""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional

import httpx

from .errors import Unavailable, WaitTimeout, raise_for

VERSION = "0.1.0"
FINISHED = ("completed", "failed", "cancelled")
JSON = Any
Job = Dict[str, Any]


def job_request(kind: str, payload: JSON = None, *, queue: Optional[str] = None, priority: Optional[int] = None,
                delay_seconds: Optional[float] = None, run_at: Optional[str] = None,
                max_attempts: Optional[int] = None, timeout_seconds: Optional[float] = None,
                idempotency_key: Optional[str] = None, callback_url: Optional[str] = None,
                tags: Optional[Iterable[str]] = None, depends_on: Optional[Iterable[str]] = None,
                on_parent_failure: Optional[str] = None, ref: Optional[str] = None,
                batch_id: Optional[str] = None) -> Dict[str, Any]:
    """The body of one job for ``POST /v1/jobs`` (options left out take the queue's defaults).

    ``depends_on``: parent job ids, or (in :meth:`Client.enqueue_many`) the ``ref`` of an
    earlier job of the same call; the job waits until they have finished.
    ``on_parent_failure``: ``"cancel"`` (default) or ``"run"``.
    """
    body: Dict[str, Any] = {"kind": kind}
    options = {"payload": payload, "queue": queue, "priority": priority, "delay_seconds": delay_seconds,
               "run_at": run_at, "max_attempts": max_attempts, "timeout_seconds": timeout_seconds,
               "idempotency_key": idempotency_key, "callback_url": callback_url,
               "tags": list(tags) if tags is not None else None,
               "depends_on": list(depends_on) if depends_on is not None else None,
               "on_parent_failure": on_parent_failure, "ref": ref, "batch_id": batch_id}
    body.update({k: v for k, v in options.items() if v is not None})
    return body


class Client:
    """Talks to a Spool gateway. Every call raises a :class:`spool.SpoolError` subclass carrying
    the problem document when the gateway refuses it, and :class:`spool.Unavailable` when it
    cannot be reached.

    :param url: the gateway, e.g. ``http://127.0.0.1:8080``
    :param token: an API token (``Authorization: Bearer``); none for a token-less local gateway
    """

    def __init__(self, url: str, token: Optional[str] = None, *, timeout: float = 30.0,
                 transport: Optional[httpx.BaseTransport] = None):
        headers = {"User-Agent": f"spool-python/{VERSION}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, json: Any = None, params: Optional[Mapping[str, Any]] = None,
              headers: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None) -> httpx.Response:
        try:
            kwargs: Dict[str, Any] = {"json": json, "params": params, "headers": headers}
            if timeout is not None:
                kwargs["timeout"] = timeout
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise Unavailable(0, {"type": "urn:spool:problem:unreachable", "detail": f"{self.url}: {error}"}) from error
        raise_for(response)
        return response

    # -- jobs ----------------------------------------------------------------------------

    def enqueue(self, kind: str, payload: JSON = None, **options: Any) -> Job:
        """Enqueues one job and returns what ``202 Accepted`` said (``id``, ``state``, ``links``).

        Options: ``queue``, ``priority``, ``delay_seconds``, ``run_at``, ``max_attempts``,
        ``timeout_seconds``, ``idempotency_key``, ``callback_url``, ``tags``. With an
        idempotency key, a repeat of the same request returns the first job with
        ``replayed: True``.
        """
        return self._call("POST", "/v1/jobs", json=job_request(kind, payload, **options)).json()

    def enqueue_many(self, jobs: Iterable[Mapping[str, Any]]) -> List[Job]:
        """Enqueues up to 1,000 jobs atomically (all or none). Each item is a
        :func:`job_request`-style dict: ``{"kind": ..., "payload": ..., ...}``."""
        return self._call("POST", "/v1/jobs/batch", json={"jobs": list(jobs)}).json()["jobs"]

    # -- workflows -----------------------------------------------------------------------

    def create_batch(self, jobs: Iterable[Mapping[str, Any]], *, callback: Optional[Mapping[str, Any]] = None,
                     on_failure: Optional[Mapping[str, Any]] = None, callback_url: Optional[str] = None,
                     open: bool = False) -> Dict[str, Any]:
        """Creates a batch of jobs; ``callback`` (``{"queue", "kind", "payload"}``) runs once all
        have finished, ``on_failure`` instead when one failed for good. Returns
        ``{"batch": {...}, "jobs": [...]}``."""
        body: Dict[str, Any] = {"jobs": list(jobs), "open": open}
        body.update({k: v for k, v in {"callback": callback, "on_failure": on_failure, "callback_url": callback_url}.items()
                     if v is not None})
        return self._call("POST", "/v1/batches", json=body).json()

    def batch(self, batch_id: str) -> Dict[str, Any]:
        """A batch's document: state, counts per state, callback job."""
        return self._call("GET", f"/v1/batches/{batch_id}").json()

    def publish(self, topic: str, payload: JSON = None, *, attributes: Optional[Mapping[str, str]] = None,
                idempotency_key: Optional[str] = None) -> Dict[str, Any]:
        """Publishes an event to a topic: one job per matching subscriber. Returns
        ``{"event_id", "topic", "job_ids", "replayed"}``."""
        body: Dict[str, Any] = {"payload": {} if payload is None else payload, "attributes": dict(attributes or {})}
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return self._call("POST", f"/v1/topics/{topic}/events", json=body).json()

    def get(self, job_id: str) -> Job:
        """The job's status document."""
        return self._call("GET", f"/v1/jobs/{job_id}").json()

    def list(self, *, queue: Optional[str] = None, state: Optional[str] = None, kind: Optional[str] = None,
             limit: int = 50, cursor: Optional[str] = None) -> Dict[str, Any]:
        """One page of jobs, newest first: ``{"jobs": [...], "next_cursor": ...}``."""
        params = {k: v for k, v in {"queue": queue, "state": state, "kind": kind, "limit": limit, "cursor": cursor}.items()
                  if v is not None}
        return self._call("GET", "/v1/jobs", params=params).json()

    def iterate(self, **filters: Any) -> Iterator[Job]:
        """Every job matching the filters, page after page."""
        cursor = None
        while True:
            page = self.list(cursor=cursor, **filters)
            yield from page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, job_id: str) -> Job:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel").json()

    def retry(self, job_id: str) -> Job:
        """Puts a failed or cancelled job back in its queue with a fresh set of attempts."""
        return self._call("POST", f"/v1/jobs/{job_id}/retry").json()

    def delete(self, job_id: str) -> None:
        self._call("DELETE", f"/v1/jobs/{job_id}")

    def workers(self) -> List[Dict[str, Any]]:
        """The worker registry (your tenant's remote workers; every worker for an admin token),
        each with its ``state``: ``active`` or ``lost``."""
        return self._call("GET", "/v1/workers").json()["workers"]

    def events(self, job_id: str, *, last_event_id: Optional[str] = None,
               timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """The job's Server-Sent Events, from ``last_event_id`` on (the job as it is now when
        none): dicts with ``event``, ``id`` and ``data`` (parsed JSON). Ends when the job does,
        or after ``timeout`` seconds (keep-alives do not extend it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        import json as jsonlib

        headers = {"Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                   timeout=httpx.Timeout(self._http.timeout.connect, read=None if timeout is None else min(timeout, 20.0))) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for(response)
                event: Dict[str, Any] = {}
                for line in response.iter_lines():
                    if deadline is not None and time.monotonic() > deadline:
                        return
                    if line == "":
                        if "data" in event:
                            try:
                                event["data"] = jsonlib.loads(event["data"])
                            except ValueError:
                                pass
                            yield event
                        event = {}
                    elif line.startswith(":"):
                        continue
                    else:
                        field, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if field == "data":
                            event["data"] = event["data"] + "\n" + value if "data" in event else value
                        elif field in ("event", "id"):
                            event[field] = value
        except httpx.TransportError as error:
            raise Unavailable(0, {"type": "urn:spool:problem:unreachable", "detail": f"{self.url}: {error}"}) from error

    def wait(self, job_id: str, timeout: Optional[float] = None) -> Job:
        """Waits until the job is completed, failed or cancelled and returns its document.

        Follows the job's event stream (no polling); a dropped stream is resumed with
        ``Last-Event-ID``, so no event is missed. Raises :class:`spool.WaitTimeout` after
        ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_id: Optional[str] = None
        delay = 0.1
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeout(f"job {job_id} did not finish within {timeout} s")
            try:
                for event in self.events(job_id, last_event_id=last_id, timeout=left):
                    last_id = event.get("id", last_id)
                    data = event.get("data")
                    if isinstance(data, dict) and data.get("state") in FINISHED:
                        break
                job = self.get(job_id)
                if job["state"] in FINISHED:
                    return job
                delay = 0.1
            except (Unavailable, httpx.ReadTimeout):
                time.sleep(min(delay, max(0.0, left or delay)))
                delay = min(delay * 2, 5.0)
