"""Spool for Python: enqueue and follow jobs (:class:`Client`), and run them (:class:`Worker`).

    from spool import Client, Worker, Retry, Fail

    client = Client("http://127.0.0.1:8080", token="...")
    job = client.enqueue("email.send", {"to": "a@example.com"}, idempotency_key="signup-42")
    done = client.wait(job["id"], timeout=60)

    worker = Worker("http://127.0.0.1:8080", token="...", queues=["default"])

    @worker.handler("email.send")
    def send(payload, job):
        job.progress(50, "rendering")
        return {"sent": True}

    worker.run()  # until SIGTERM or SIGINT
"""
from .client import VERSION, Client, job_request
from .errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    LeaseLost,
    NotFound,
    QueueFull,
    SpoolError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from .worker import Fail, JobContext, Retry, Worker

__all__ = [
    "Client", "job_request", "Worker", "JobContext", "Retry", "Fail",
    "SpoolError", "InvalidRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict", "LeaseLost",
    "QueueFull", "Unavailable", "WaitTimeout",
]
__version__ = VERSION
