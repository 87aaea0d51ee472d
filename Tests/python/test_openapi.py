"""The OpenAPI document is valid OpenAPI 3.1 and documents every status the gateway answers."""
import json

import httpx
import pytest
from openapi_spec_validator import validate

from conftest import ROOT, Server

SHIPPED = json.loads((ROOT / "Sources/SpoolGateway/openapi.json").read_text())
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def statuses(operation_id: str) -> set:
    op = next(op for _, _, op in operations(SHIPPED) if op["operationId"] == operation_id)
    return set(op["responses"])


def resolve(response: dict) -> dict:
    if "$ref" in response:
        return SHIPPED["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response


def test_shipped_document_is_valid():
    validate(SHIPPED)


def test_served_document_is_valid_and_the_shipped_one(server: Server):
    served = httpx.get(server.url + "/v1/openapi.json").json()
    validate(served)
    assert served == SHIPPED, "the binary serves another document than the repo's: rebuild it"


def test_every_operation_documents_its_errors():
    for path, method, op in operations(SHIPPED):
        codes = set(op["responses"])
        assert "403" in codes, f"{method} {path}: cross-site requests answer 403"
        if path.startswith("/v1/") and path != "/v1/openapi.json":
            # Operations without an API token (`security: []`: a service's reports, carrying a
            # lease token; the dashboard's login) cannot answer 401 for a missing one.
            if op.get("security") != []:
                assert "401" in codes, f"{method} {path}"
            assert "403" in codes, f"{method} {path}"
            # These answer without touching the store: the WebSocket, the live feeds, the kinds
            # this process knows, the dashboard's session.
            if op["operationId"] not in ("webSocket", "eventFeed", "eventSummary", "listKinds", "getSession", "createSession", "deleteSession"):
                assert "503" in codes, f"{method} {path}"
        for code, response in op["responses"].items():
            if code[0] in "45":
                assert "application/problem+json" in resolve(response)["content"], f"{method} {path} {code}"


def test_concrete_statuses():
    assert {"200", "202", "400", "401", "403", "409", "413", "415", "422", "429", "503"} <= statuses("enqueueJob")
    assert {"202", "400", "413", "415", "422", "429", "503"} <= statuses("enqueueBatch")
    assert {"404", "503"} <= statuses("purgeQueue")
    assert {"404", "503"} <= statuses("retryFailed")
    assert {"404", "409"} <= statuses("cancelJob") & statuses("retryJob") & statuses("deleteJob")
    assert "426" in statuses("webSocket")
    assert "503" in statuses("readyz") and "503" in statuses("metrics")
    for name in ("QueueFull", "Unavailable"):
        assert SHIPPED["components"]["responses"][name]["headers"]["Retry-After"]["required"]
    assert SHIPPED["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"]["required"]


def test_enqueue_links_to_everything_about_the_job():
    responses = SHIPPED["paths"]["/v1/jobs"]["post"]["responses"]
    links = {}
    for name, link in responses["202"]["links"].items():
        link = SHIPPED["components"]["links"][link["$ref"].rsplit("/", 1)[1]] if "$ref" in link else link
        assert link["parameters"] == {"id": "$response.body#/id"}, name
        links[link["operationId"]] = name
    assert set(links) == {"getJob", "cancelJob", "retryJob", "deleteJob", "jobEvents", "jobDeliveries"}


@pytest.mark.parametrize("method, path, allow", [
    ("PATCH", "/v1/jobs", {"GET", "POST"}),
    ("PUT", "/v1/jobs/0190f6a4-5b6c-7d8e-9f00-112233445566", {"GET", "DELETE"}),
    ("DELETE", "/healthz", {"GET"}),
])
def test_other_methods_answer_405_with_allow(server: Server, method, path, allow):
    answer = httpx.request(method, server.url + path, headers=server.headers())
    assert answer.status_code == 405
    assert {m.strip() for m in answer.headers["allow"].split(",")} == allow
    assert answer.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("header", [
    {"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
])
def test_cross_site_requests_answer_403(server: Server, header):
    answer = httpx.post(server.url + "/v1/queues/default/pause", headers={**server.headers(), **header})
    assert answer.status_code == 403
    assert answer.json()["type"] == "urn:spool:problem:cross-site"
