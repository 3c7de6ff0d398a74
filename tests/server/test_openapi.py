"""The OpenAPI document: every route is in it, nothing else is, and every $ref resolves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from starlette.routing import Route

from server.infra.settings import Settings
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
