"""The served OpenAPI document: valid OpenAPI 3.1, every /api, /rest and REST broadcast route of
the app in it, and responses that match what it declares."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import jsonschema_rs
from schemathesis.specs.openapi.definitions import OPENAPI_31

from realtime_messaging.server.app import build_app
from tests.conftest import TEST_SECRET, RunningServer, Seed, make_settings

from .conftest import Http, insert_message


async def _spec(http: Http) -> dict[str, Any]:
    status, spec, response = await http.call("GET", "/openapi.json")
    assert status == 200 and response.content_type == "application/json"
    assert isinstance(spec, dict)
    return spec


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its components inlined, as a standalone JSON Schema."""
    return {"$defs": spec["components"]["schemas"], **_rewrite(schema)}


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (v.replace("#/components/schemas/", "#/$defs/") if k == "$ref" else _rewrite(v))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


async def test_the_document_is_valid_openapi_3_1(http: Http) -> None:
    spec = await _spec(http)
    assert spec["openapi"] == "3.1.0"
    jsonschema_rs.Draft202012Validator(OPENAPI_31).validate(spec)
    # Every schema in it is a valid JSON Schema 2020-12 and every reference resolves.
    for name, schema in spec["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    refs = set(_refs(spec))
    assert refs and refs <= {f"#/components/schemas/{n}" for n in spec["components"]["schemas"]}
    operation_ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for path, ops in spec["paths"].items():
        names = set(re.findall(r"{(\w+)}", path))
        for method, op in ops.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)
            assert op["security"] == [{"bearer": []}], (method, path)
            assert "default" in op["responses"], (method, path)


async def test_every_api_and_rest_route_of_the_app_is_in_it(
    http: Http, pool: asyncpg.Pool, database_url: str
) -> None:
    app = await build_app(make_settings(), pool, database_url, TEST_SECRET)
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(("/api/", "/rest/", "/realtime/v1/api/"))
        and route.method != "HEAD"
    }
    spec = await _spec(http)
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert registered == documented
    assert {("GET", "/api/admin/users"), ("GET", "/api/admin/customers")} <= documented
    assert {
        ("POST", "/realtime/v1/api/broadcast"),
        ("POST", "/realtime/v1/api/broadcast/{topic}/events/{event}"),
    } <= documented
    # 22 + 2 admin lists + 4 /rest/v1/{table} + 2 REST broadcast + 2 message edit/delete
    # + 2 attachments (upload, signed link) + 2 search and queues (search, conversation counts)
    # + 5 webhook admin routes (create, list, change, delete, attempts)
    assert len(documented) == 41


async def test_every_route_reading_a_json_body_declares_it(http: Http) -> None:
    spec = await _spec(http)
    missing = [
        f"{method.upper()} {path}"
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if method in ("post", "put")
        and "requestBody" not in op
        # These two read no body at all.
        and path not in ("/api/messages/{message_id}/read",)
    ]
    assert missing == [], "no requestBody declared for " + ", ".join(missing)


async def test_rpc_responses_match_the_declared_schema(
    http: Http, server: RunningServer, seed: Seed, pool: asyncpg.Pool
) -> None:
    """The RPC route answers bare JSON (PostgREST style); the document must say so."""
    customer, portal = await seed.customer()
    user, _ = await seed.staff()
    message = await insert_message(pool, await seed.conversation(customer), "staff", user)
    spec = await _spec(http)
    declared = spec["paths"]["/rest/v1/rpc/{function}"]["post"]["responses"]["200"]
    validator = jsonschema_rs.validator_for(
        _resolve(spec, declared["content"]["application/json"]["schema"])
    )
    for name, args in (
        ("get_unread_message_count", {"customer_id": str(customer)}),
        ("mark_message_as_read", {"message_id": str(message), "customer_id": str(customer)}),
        ("cleanup_expired_typing_indicators", {}),
    ):
        status, body, _ = await http.call("POST", f"/rest/v1/rpc/{name}", portal, json=args)
        assert status == 200
        errors = [e.message for e in validator.iter_errors(body)]
        assert errors == [], (name, body, errors)


async def test_the_subscribe_response_is_described(http: Http) -> None:
    """The documented subscribe answer is part of the contract; the document describes it."""
    spec = await _spec(http)
    op = spec["paths"]["/api/messages/realtime/subscribe"]["post"]
    schema = _resolve(spec, op["responses"]["200"]["content"]["application/json"]["schema"])
    root = schema
    if "$ref" in root:
        root = schema["$defs"][root["$ref"].rsplit("/", 1)[1]]
    data = root["properties"]["data"]
    if "$ref" in data:
        data = schema["$defs"][data["$ref"].rsplit("/", 1)[1]]
    assert set(data.get("properties", {})) == {
        "supabaseUrl",
        "supabaseKey",
        "channels",
        "features",
        "filters",
    }, data
