"""Schemathesis against the served document: every operation, every built-in check but one."""
import hypothesis
import pytest
import schemathesis

from conftest import ADMIN, spool_server

CONFIG = {
    "seed": 9,
    # As auth for the scheme, not a plain header: ignored_auth then probes without it and with a wrong one.
    "auth": {"openapi": {"bearer": {"bearer": ADMIN}}},
    "request-timeout": 5,
    # Small and reproducible: the whole suite takes about a minute on 2 cores. No example database,
    # so a run does not depend on the previous one (nor write .hypothesis/ into the repo).
    "generation": {"mode": "all", "max-examples": 100, "deterministic": True, "database": "none"},
    "checks": {
        # Off: schema-valid jobs are refused with 422 when their queue or kind is not one this
        # deployment runs, or their payload is not what the kind takes, which no schema can know.
        "positive_data_acceptance": {"enabled": False},
    },
    "operations": [
        # The live feed never ends: read it for a moment only (schemathesis stops an event
        # stream at the request timeout or after max-stream-events, and does not call it a failure),
        # and fewer times, since every example waits out that timeout.
        {"include-path": "/v1/events", "request-timeout": 0.5, "max-stream-events": 1,
         "generation": {"max-examples": 20}},
        {"include-path": "/v1/events/summary", "request-timeout": 0.5, "max-stream-events": 1,
         "generation": {"max-examples": 20}},
        # A job's stream stays open until the job ends (and fuzzed jobs are never run).
        {"include-path": "/v1/jobs/{id}/events", "request-timeout": 0.5, "max-stream-events": 2},
    ],
}


@schemathesis.hook
def before_call(context, case, kwargs):
    """No network beyond 127.0.0.1 (a fuzzed callback_url would have the server call it), no long waits."""
    body = case.body if isinstance(case.body, dict) else {}
    jobs = body.get("jobs") if isinstance(body.get("jobs"), list) else []
    for job in [body, *jobs]:
        if isinstance(job, dict):
            job.pop("callback_url", None)
    # A worker's long poll may wait a minute for work that never comes: not past the timeout.
    wait = body.get("wait_seconds")
    if isinstance(wait, (int, float)) and not isinstance(wait, bool) and 0 < wait <= 60:
        body["wait_seconds"] = 0


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    # A server of its own: the fuzz pauses, purges and redrives queues.
    with spool_server(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


@pytest.fixture
def api(fuzz_server):
    # base-url: the document's `servers` names the default port 8080, not this server.
    config = schemathesis.Config.from_dict({**CONFIG, "base-url": fuzz_server.url})
    return schemathesis.openapi.from_url(fuzz_server.url + "/v1/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
def test_api_conforms_to_its_document(case):
    case.call_and_validate()


def test_links_from_enqueue(api):
    """Stateful: enqueue, then follow the 202's links (get, cancel, retry, delete, events, deliveries)."""
    # Health checks off: a debug build answering slowly is not a flaw of the generated data.
    settings = hypothesis.settings(max_examples=15, stateful_step_count=6, derandomize=True, database=None,
                                   deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
    api.as_state_machine().run(settings=settings)
