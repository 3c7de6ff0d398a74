"""The OpenAPI document: every route is in it, nothing else is, and every $ref resolves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import schemathesis
from starlette.routing import Route

from server.core.queue_figures import COUNTED_STATES
from server.core.wire import requests, responses
from server.data.models import Image, Job
from server.infra.settings import Settings
from server.services.presenter import Presenter
from server.web.app import create_app
from server.web.http import openapi

# Pages for people, not REST endpoints: /docs is documented by being the renderer.
PAGES = {"/", "/admin", "/docs"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    """(path, method) of every route the app serves (HEAD comes free with GET)."""
    settings = Settings.from_env({"DATA_DIR": str(tmp_path_factory.mktemp("data")),
                                  "REDIS_URL": "redis://127.0.0.1:1/0"})
    app = create_app(settings).app.other_asgi_app
    return {(route.path, method.lower())
            for route in app.routes if isinstance(route, Route) and route.path not in PAGES
            for method in route.methods or () if method != "HEAD"}


def documented() -> set[tuple[str, str]]:
    return {(path, method) for path, item in openapi.document()["paths"].items()
            for method in item if method in HTTP_METHODS}


def test_every_api_route_is_documented(served: set[tuple[str, str]]) -> None:
    api = {(path, method) for path, method in served if path.startswith("/api/")}
    assert api, "no /api routes found"
    missing = sorted(api - documented())
    assert not missing, f"routes missing from server/web/http/openapi.py: {missing}"


def test_nothing_is_documented_that_is_not_served(served: set[tuple[str, str]]) -> None:
    assert sorted(documented() - served) == []


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_reference_resolves_and_every_component_is_used() -> None:
    doc = openapi.document()
    refs = set(_refs(doc))
    for ref in refs:
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"dangling {ref}"
            node = node[part]
    for kind in ("schemas", "responses"):
        unused = {f"#/components/{kind}/{name}" for name in doc["components"][kind]} - refs
        assert not unused, f"unused components: {sorted(unused)}"


def test_every_operation_answers_something_and_path_parameters_are_declared() -> None:
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            assert operation["summary"] and operation["tags"], (path, method)
            assert any(status.startswith("2") for status in operation["responses"]), path
            declared = {p["name"] for p in [*item.get("parameters", []),
                                            *operation.get("parameters", [])]
                        if p["in"] == "path"}
            wanted = {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert declared == wanted, (path, method)


def test_the_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_dict(openapi.document())
    schema.validate()
    assert len(list(schema.get_all_operations())) == len(documented())


def test_the_renderer_is_vendored_with_its_licence() -> None:
    vendor = Path(__file__).resolve().parents[2] / "web" / "vendor" / "swagger-ui"
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"):
        assert (vendor / name).stat().st_size > 0, name


def test_limits_match_the_code() -> None:
    upload = openapi.document()["paths"]["/api/batches"]["post"]["requestBody"]
    files = upload["content"]["multipart/form-data"]["schema"]["properties"]["file"]
    assert files["maxItems"] == Settings().max_batch_files  # MAX_BATCH_FILES' default


# -- the shapes: generated from server.core.wire, and what the presenter sends fits them -----

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
META = {"width": 640, "height": 480, "format": "JPEG", "mode": "RGB", "frames": 1,
        "camera_make": None, "camera_model": "X", "taken_at": None, "has_gps": False}


def _rows(state: str = "completed") -> tuple[Image, Job]:
    image = Image(id="i1", user_id="u1", status="ready", filename="a.jpg",
                  content_type="image/jpeg", size_bytes=10, sha256="0" * 64, format="JPEG",
                  width=640, height=480, meta=META, has_thumbnail=True, has_preview=False,
                  job_id="j1", created_at=T0)
    job = Job(id="j1", user_id="u1", type="image.process", queue="images", state=state,
              stage="done", progress=100, attempt=1, max_attempts=3, priority="normal",
              payload={}, error={"type": "E", "message": "m"}, result=None, image_id="i1",
              batch_id=None, seq=5, created_at=T0, run_at=None, started_at=T0,
              finished_at=None)
    return image, job


def _fits(name: str, value: Any) -> None:
    doc = openapi.document()
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": doc["components"]})
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(value)]
    assert not errors, errors


def test_the_presenter_sends_what_the_document_says() -> None:
    presenter = Presenter("secret", 60)
    image, job = _rows()
    _fits("Image", presenter.image(image))
    _fits("Job", presenter.job(job, image))
    _fits("Upload", {"image": presenter.image(image), "job": presenter.job(job, image),
                     "duplicate": True})
    queued = _rows("queued")[1]
    _fits("Job", presenter.job(queued, None, 3))
    image.meta = None
    _fits("Image", presenter.image(image))


def test_the_presenter_output_keeps_every_key_and_null() -> None:
    presenter = Presenter("secret", 60, "https://x.test")
    image, job = _rows("queued")
    sent = presenter.job(job, image, 2)
    assert sent == {
        "id": "j1", "type": "image.process", "state": "queued", "progress": 100,
        "stage": "done", "attempt": 1, "max_attempts": 3,
        "error": {"type": "E", "message": "m"}, "result": None, "image_id": "i1",
        "batch_id": None, "created_at": "2026-01-02T03:04:05Z",
        "started_at": "2026-01-02T03:04:05Z", "finished_at": None, "run_at": None,
        "priority": "normal", "queue_position": 2, "seq": 5}
    shown = presenter.image(image)
    assert shown["metadata"] == META and shown["preview_url"] is None
    assert shown["thumbnail_url"].startswith("https://x.test/api/images/i1/thumbnail?")
    assert set(shown) == {"id", "status", "filename", "content_type", "size_bytes", "width",
                          "height", "format", "metadata", "thumbnail_url", "preview_url",
                          "original_url", "created_at", "job_id"}
    job.state = "completed"
    assert presenter.job(job, image)["result"] == {"image": presenter.image(image)}
    job.error = {"type": "E", "message": "m", "retryable": True}
    assert presenter.job(job, image)["error"]["retryable"] is True


def test_every_shape_is_generated_from_its_struct() -> None:
    schemas = openapi.document()["components"]["schemas"]
    for shape in (responses.Job, responses.Image, requests.TaskRequest):
        name = shape.__name__
        fields = [f.name for f in msgspec.structs.fields(shape)]
        assert list(schemas[name]["properties"]) == fields, name
        required = [f.name for f in msgspec.structs.fields(shape) if f.required]
        assert schemas[name].get("required", []) == required, name
    counts = schemas["Queue"]["properties"]["counts"]
    assert counts["required"] == list(COUNTED_STATES)
    states = openapi.document()["paths"]["/api/jobs"]["get"]["parameters"][0]["schema"]
    assert states["enum"] == list(COUNTED_STATES)
