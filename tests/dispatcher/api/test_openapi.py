"""The API's own documentation: /docs is Swagger UI served from the dispatcher (nothing from
another host, so it works offline), /redoc is off, and the OpenAPI document declares what the
routes take and answer: the Open311 POST body, its errors' shape, and what any operation that
takes a body may answer (400 for a body that cannot be read, 413 over the body limit)."""

from __future__ import annotations

import re
from typing import Any

from tests.dispatcher.api.conftest import Env

METHODS = ("get", "post", "put", "patch", "delete")


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def test_docs_page_loads_everything_from_the_dispatcher(env: Env) -> None:
    anon = env.anonymous()
    page = anon.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "SwaggerUIBundle" in html
    assert re.findall(r"(?:https?:)?//[\w.-]+", html) == []
    refs = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert sorted(refs) == [
        "/app/icons/icon.svg",
        "/openapi.json",
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/vendor/swagger-ui/swagger-ui.css",
    ]
    for ref in refs:
        assert anon.get(ref).status_code == 200, ref
    assert anon.get("/static/vendor/swagger-ui/LICENSE").text.lstrip().startswith("Apache License")
    assert anon.get("/redoc").status_code == 404


def test_open311_post_declares_its_body_and_errors(env: Env) -> None:
    spec = env.anonymous().get("/openapi.json").json()
    op = spec["paths"]["/open311/v2/requests.json"]["post"]
    body = op["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/x-www-form-urlencoded", "application/json"}
    for content in body["content"].values():
        fields = content["schema"]
        assert {"service_code", "lat", "long"} <= set(fields["required"])
        assert {"api_key", "description", "media_url"} <= set(fields["properties"])
    for code in ("400", "403", "404"):
        schema = op["responses"][code]["content"]["application/json"]["schema"]
        assert schema["type"] == "array", code
        assert schema["items"] == {"$ref": "#/components/schemas/Open311ErrorPublic"}
    item = spec["components"]["schemas"]["Open311ErrorPublic"]
    assert set(item["required"]) == {"code", "description"}


def test_400_and_413_are_documented_wherever_a_body_is_taken(env: Env) -> None:
    spec = env.anonymous().get("/openapi.json").json()
    settings = env.dispatcher.settings
    with_body = [(m, p, op) for m, p, op in operations(spec) if "requestBody" in op]
    assert len(with_body) >= 10
    for method, path, op in with_body:
        for code in ("400", "413"):
            answer = op["responses"].get(code)
            assert answer is not None, (method, path, code)
            schema = answer["content"]["application/json"]["schema"]
            assert schema.get("$ref") == "#/components/schemas/ErrorPublic" or schema.get(
                "items"
            ) == {"$ref": "#/components/schemas/Open311ErrorPublic"}, (method, path, code)
    limits = f"{settings.max_body_bytes} bytes, or {settings.max_upload_bytes} bytes"
    login = spec["paths"]["/auth/login"]["post"]["responses"]["413"]["description"]
    assert limits in login
    resolve = spec["paths"]["/tickets/{ticket_id}/resolve"]["post"]["responses"]["413"]
    assert "photo too large" in resolve["description"] and limits in resolve["description"]
    for method, path, op in operations(spec):
        if "requestBody" not in op:
            assert "413" not in op["responses"], (method, path)
