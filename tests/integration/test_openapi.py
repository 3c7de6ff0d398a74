"""schemathesis against a live web process: no 5xx, and every answer fits /openapi.json.

The run gets a stack of its own: as an admin it pauses queues, retries and clears dead
letters and removes old jobs, which would pull the rug from under the shared ``stack``.
Its worker serves only the image queues, so the webhook deliveries and emails that the
generated requests create stay queued: nothing is ever sent off this machine.

Random ids almost never exist, so each run first makes real data (a processed image,
a failed one, a delayed job, a batch, a schedule, webhooks) and the generated path
parameters name those ids too: the answers for real resources are checked as well.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from server.core.jobs import queue_family
from server.web.http import openapi
from tests.conftest import Databases, Stack, running_stack
from tests.factories import FINAL, auth, jpeg_bytes

pytestmark = pytest.mark.integration

# Generated requests per operation (besides schemathesis's boundary-value cases): enough
# to reach every branch of these small handlers, few enough that both runs take well
# under a minute on two slow cores.
MAX_EXAMPLES = 20
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def api(redis_url: str, databases: Databases,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Plain users may mail example.com here (EMAIL_ALLOWED_RECIPIENTS), so that the seeds'
    # e-mail schedules and the documented examples are accepted as they would be.
    with running_stack(redis_url, databases.new(), tmp_path_factory.mktemp("openapi"),
                       worker_args=("-Q", *queue_family("images")),
                       EMAIL_ALLOWED_RECIPIENTS="@example.com") as running:
        yield running


@dataclass
class Known:
    """Path parameters of real resources, by the set of parameter names they fill."""

    kept: list[dict[str, str]] = field(default_factory=list)
    # DELETE gets resources of its own, so that the other operations keep theirs.
    spare: list[dict[str, str]] = field(default_factory=list)

    def matching(self, names: frozenset[str], method: str) -> list[dict[str, str]]:
        pool = self.spare if method.upper() == "DELETE" else self.kept
        return [values for values in pool if frozenset(values) == names]


def _ok(answer: httpx.Response, status: int) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()


def _upload(http: httpx.Client, data: bytes, name: str, **fields: str) -> dict[str, Any]:
    return dict(_ok(http.post("/api/images", data=fields,
                              files={"file": (name, data, "image/jpeg")}), 202))


def _wait_final(http: httpx.Client, job_ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        while http.get(f"/api/jobs/{job_id}").json()["state"] not in FINAL:
            assert time.monotonic() < deadline, f"job {job_id} never finished"
            time.sleep(0.2)


def seed(stack: Stack, token: str, tag: int) -> Known:
    """Real resources of this token's user; ``tag`` keeps each user's bytes apart."""
    whole = jpeg_bytes(900, 600, color=(tag, 80, 120))
    with httpx.Client(base_url=stack.url, headers=auth(token), timeout=30) as http:
        done = _upload(http, jpeg_bytes(640, 480, color=(tag, 10, 10)), "done.jpg")
        broken = _upload(http, whole[: len(whole) // 3], "cut.jpg")  # fails: a dead letter
        waiting = _upload(http, jpeg_bytes(320, 240, color=(tag, 20, 20)), "later.jpg",
                          delay="3600", priority="low")
        doomed = _upload(http, jpeg_bytes(300, 200, color=(tag, 30, 30)), "doomed.jpg")
        batch = _ok(http.post("/api/batches", files=[
            ("file", ("a.jpg", jpeg_bytes(400, 300, color=(tag, 40, 40)), "image/jpeg")),
            ("file", ("b.txt", b"not an image", "text/plain"))]), 202)
        schedules = [_ok(http.post("/api/tasks", json={
            "type": "email.send", "payload": {"to": "ana@example.com", "subject": "Daily"},
            "repeat": {"cron": "0 7 * * *", "timezone": "Europe/Paris"}}), 201)["schedule"]
            for _ in range(2)]
        hooks = [_ok(http.post("/api/webhooks", json={"url": f"https://example.com/{n}"}),
                     201)["webhook"] for n in range(2)]
        _wait_final(http, [done["job"]["id"], broken["job"]["id"], doomed["job"]["id"],
                           batch["items"][0]["job"]["id"]])
    images = [done["image"]["id"], broken["image"]["id"], waiting["image"]["id"]]
    jobs = [done["job"]["id"], broken["job"]["id"], waiting["job"]["id"]]
    return Known(
        kept=[*({"image_id": image} for image in images),
              *({"image_id": done["image"]["id"], "kind": kind}
                for kind in ("thumbnail", "preview", "original")),
              *({"job_id": job} for job in jobs),
              {"batch_id": batch["batch"]["id"]},
              *({"name": name} for name in ("images", "email", "webhooks"))],
        spare=[{"image_id": doomed["image"]["id"]}, {"job_id": broken["job"]["id"]},
               {"schedule_id": schedules[1]["id"]}, {"webhook_id": hooks[1]["id"]}],
    )


# The document as the server builds it, loaded at import so that pytest has one test per
# operation before any server runs (test_the_server_serves_this_document checks that
# /openapi.json is the same); every request goes to the live server.
SCHEMA = schemathesis.openapi.from_dict(openapi.document(), config=schemathesis.Config.from_dict({
    # Derandomized and without an example database: the same requests on every run.
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none",
                   "no-shrink": True},
}))
# The resources of the run under way; set by the ``as_user`` / ``as_admin`` fixtures.
CURRENT: dict[str, Known] = {}


@SCHEMA.hook
def before_generate_path_parameters(context: schemathesis.HookContext,
                                    strategy: st.SearchStrategy[Any]) -> Any:
    """Generated path parameters, or (often) those of a real resource of the caller's."""
    operation = context.operation
    assert operation is not None
    names = frozenset(parameter.name for parameter in operation.path_parameters)

    def real(_: None) -> st.SearchStrategy[Any]:
        values = CURRENT["known"].matching(names, operation.method) if CURRENT else []
        return st.sampled_from(values) if values else strategy

    return strategy | st.none().flatmap(real)


@pytest.fixture(scope="module")
def user_run(api: Stack) -> tuple[str, Known]:
    token = _ok(httpx.post(f"{api.url}/api/session", timeout=10), 201)["token"]
    return token, seed(api, token, tag=1)


@pytest.fixture(scope="module")
def admin_run(api: Stack) -> tuple[str, Known]:
    token = api.env["ADMIN_TOKEN"]
    return token, seed(api, token, tag=2)


@pytest.fixture
def as_user(user_run: tuple[str, Known]) -> Iterator[str]:
    CURRENT["known"] = user_run[1]
    yield user_run[0]
    CURRENT.clear()


@pytest.fixture
def as_admin(admin_run: tuple[str, Known]) -> Iterator[str]:
    CURRENT["known"] = admin_run[1]
    yield admin_run[0]
    CURRENT.clear()


# The run's fixtures only say whose resources these are; nothing in them needs resetting
# between examples.
SHARED_FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


# Which operations answered with a success at least once, per run: a run whose every
# answer is a 4xx (a token gone bad, say) would otherwise "conform" and pass.
SUCCEEDED: dict[str, set[str]] = {"user": set(), "admin": set()}
_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})
ADMIN_ONLY = frozenset(
    f"{method.upper()} {path}" for path, item in openapi.document()["paths"].items()
    for method, operation in item.items()
    if method in _METHODS and "403" in operation["responses"])


def _call(case: schemathesis.Case, api: Stack, token: str, run: str) -> None:
    if (case.method, case.path) == ("DELETE", "/api/session") and run == "user":
        # It revokes the token it is called with: a token of its own, or the run would
        # continue with a dead one.
        token = _ok(httpx.post(f"{api.url}/api/session", timeout=10), 201)["token"]
    response = case.call_and_validate(base_url=api.url, headers=auth(token), checks=CHECKS)
    if response.status_code < 300:
        SUCCEEDED[run].add(f"{case.method} {case.path}")


@SCHEMA.parametrize()
@SHARED_FIXTURES
def test_the_api_as_a_user_keeps_its_document(case: schemathesis.Case, api: Stack,
                                              as_user: str) -> None:
    _call(case, api, as_user, "user")


@SCHEMA.parametrize()
@SHARED_FIXTURES
def test_the_api_as_an_admin_keeps_its_document(case: schemathesis.Case, api: Stack,
                                                as_admin: str) -> None:
    _call(case, api, as_admin, "admin")


RUNS = {"user": "test_the_api_as_a_user_keeps_its_document",
        "admin": "test_the_api_as_an_admin_keeps_its_document"}


def test_both_runs_reached_real_resources(request: pytest.FixtureRequest) -> None:
    """Most operations (about 90% today) succeeded at least once in each run (this test
    runs after both, by file order). A run selected in this session that reached nothing
    fails here; only a run left out of the selection (-k) is not judged."""
    operations = {f"{method.upper()} {path}" for path, item in
                  openapi.document()["paths"].items() for method in item if method in _METHODS}
    selected = {item.name.split("[", 1)[0] for item in request.session.items}
    judged = [run for run, test in RUNS.items() if test in selected]
    if not judged:
        pytest.skip("neither schemathesis run was selected in this session")
    for run in judged:
        reachable = operations - ADMIN_ONLY if run == "user" else operations
        share = len(SUCCEEDED[run] & reachable) / len(reachable)
        assert share >= 0.8, (run, f"{share:.0%} of operations answered 2xx",
                              sorted(reachable - SUCCEEDED[run]))


def test_the_server_serves_this_document(api: Stack) -> None:
    answer = httpx.get(f"{api.url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == openapi.document()
    page = httpx.get(f"{api.url}/docs", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/docs.js" in page.text and "<script>" not in page.text


# Inputs that once answered 500; each now gets a JSON error (or, where the database
# backend decides, an empty answer): SQLite takes a NUL in a search, PostgreSQL refuses it.
HOSTILE: list[tuple[str, str, str, dict[str, Any], set[int]]] = [
    ("user", "GET", "/api/images/0/thumbnail?expires=4102444800&sig=%C3%A9%C3%A9", {}, {404}),
    ("user", "GET", "/api/images/0/original?expires=%C2%B2&sig=abc", {}, {404}),
    ("user", "GET", "/api/images?limit=%C2%B2", {}, {400}),
    ("user", "GET", "/api/jobs?limit=%C2%B2", {}, {400}),
    ("user", "POST", "/api/webhooks", {"json": {"url": "http://[abc/x"}}, {422}),
    ("user", "POST", "/api/webhooks", {"json": {"url": "https://x.test:99999/"}}, {422}),
    ("user", "POST", "/api/tasks",
     {"json": {"type": "webhook.deliver", "payload": {"url": "http://[::1"}}}, {422}),
    ("user", "POST", "/api/tasks",
     {"json": {"type": "email.send", "payload": {"to": "a@example.com", "subject": "S"},
               "repeat": {"cron": "* * * * *", "timezone": {}}}}, {422}),
    ("user", "GET", "/api/images?before=a%00b", {}, {200, 400}),
    ("user", "GET", "/api/jobs?type=a%00b", {}, {200, 400}),
    ("user", "GET", "/api/images/a%00b", {}, {400, 404}),
    ("user", "DELETE", "/api/webhooks/a%00b", {}, {400, 404}),
    ("admin", "POST", "/api/queues/images/clean", {"content": b'{"older_than_s": Infinity}'},
     {400}),
    ("admin", "POST", "/api/queues/images/clean", {"json": {"older_than_s": 1e300}}, {400}),
    ("admin", "POST", "/api/queues/images/clean?older_than_s=99999999999999999999", {}, {400}),
    ("admin", "GET", "/api/dlq?error=a%00b", {}, {200, 400}),
]


@pytest.mark.parametrize(("who", "method", "path", "send", "statuses"), HOSTILE)
def test_hostile_values_get_a_json_answer(api: Stack, who: str, method: str, path: str,
                                         send: dict[str, Any], statuses: set[int]) -> None:
    token = api.env["ADMIN_TOKEN"] if who == "admin" else \
        _ok(httpx.post(f"{api.url}/api/session", timeout=10), 201)["token"]
    answer = httpx.request(method, f"{api.url}{path}", headers=auth(token), timeout=10, **send)
    assert answer.status_code in statuses, answer.text
    body = answer.json()
    if answer.status_code >= 400:
        assert {"code", "message"} <= set(body["error"])
