"""A small typed layer over aiohttp: declared routes with pydantic models, one error envelope,
authentication to a :class:`Caller`, and the OpenAPI document built from the same declarations.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID

import asyncpg
import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from ...domain.bounds import DEFAULT_LIMITS, InputLimits, depth_message, too_deep
from ...domain.identity import Identity, Kind
from ...store.caller import Caller
from ..auth import Authenticator, AuthError, AuthUnavailable
from ..http import (
    INTERNAL_MESSAGE,
    UNAVAILABLE_MESSAGE,
    bearer_token,
    database_unavailable,
    error,
    ok,
    retry_after,
)
from .errors import ApiError
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

#: caller: a staff token or portal token (or the service key); service: the service key only;
#: any: also the anon key (PostgREST-style RPC); public: no token.
Auth = Literal["caller", "service", "any", "public"]


class Model(BaseModel):
    """Request bodies: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=False, extra="forbid")


def not_found(what: str = "not found") -> ApiError:
    return ApiError(404, "not_found", what)


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler gets besides its body: who is asking, the request, the database."""

    request: web.Request
    caller: Caller
    identity: Identity | None
    pool: asyncpg.Pool
    limiter: RateLimiter
    limits: InputLimits = DEFAULT_LIMITS

    def path_param(self, name: str) -> str:
        return self.request.match_info[name]

    def uuid_param(self, name: str) -> UUID:
        try:
            return UUID(self.path_param(name))
        except ValueError as exc:
            raise ApiError(422, "validation_error", f"{name}: not a UUID") from exc


Handler = Callable[[Context, Any], Awaitable[Any]]
#: How a route answers an error: the envelope, or (``/rest/v1``) PostgREST's shape.
ErrorRenderer = Callable[[ApiError], web.StreamResponse]


def envelope_error(exc: ApiError) -> web.StreamResponse:
    return error(exc.status, exc.code, exc.message, headers=exc.headers)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    auth: Auth
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: dict[str, Any] | None
    status: int
    tags: tuple[str, ...]
    #: The request is something its user did (sending, typing, reading): presence activity.
    activity: bool = False
    #: A JSON Schema for a body the handler reads itself (the RPC route), for the document.
    request_schema: dict[str, Any] | None = None
    #: Schemas of path parameters narrower than "a string" (an enum of function names).
    path_schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: How the route answers an error (the envelope unless given).
    errors: ErrorRenderer = envelope_error
    #: The JSON Schema of what ``errors`` answers, when not the envelope.
    error_schema: dict[str, Any] | None = None
    #: Statuses also answered without a body (a 204; ``status`` itself: never a body declared).
    empty_statuses: tuple[int, ...] = ()
    #: Statuses also answered with the success body (206 for a partial range, say).
    also_statuses: tuple[int, ...] = ()


@dataclass
class Api:
    """The route table; handlers register with :meth:`route`."""

    authenticator: Authenticator
    pool: asyncpg.Pool
    limiter: RateLimiter
    #: Told when a staff user or customer does something through the API (presence activity).
    on_activity: Callable[[Identity], None] = lambda identity: None
    limits: InputLimits = DEFAULT_LIMITS
    routes: list[Route] = field(default_factory=list)

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        auth: Auth = "caller",
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: dict[str, Any] | None = None,
        status: int = 200,
        tags: tuple[str, ...] = (),
        request_schema: dict[str, Any] | None = None,
        path_schemas: dict[str, dict[str, Any]] | None = None,
        activity: bool = False,
        errors: ErrorRenderer = envelope_error,
        error_schema: dict[str, Any] | None = None,
        empty_statuses: tuple[int, ...] = (),
        also_statuses: tuple[int, ...] = (),
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(
                Route(
                    method,
                    path,
                    handler,
                    summary,
                    auth,
                    body,
                    query,
                    response,
                    status,
                    tags,
                    activity,
                    request_schema,
                    path_schemas or {},
                    errors,
                    error_schema,
                    empty_statuses,
                    also_statuses,
                )
            )
            return handler

        return register

    def aiohttp_routes(self) -> list[web.RouteDef]:
        # GET routes answer HEAD too (aiohttp's add_get does the same).
        return [
            web.get(r.path, self._wrap(r))
            if r.method == "GET"
            else web.route(r.method, r.path, self._wrap(r))
            for r in self.routes
        ]

    def _wrap(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                caller, identity = await self._authenticate(request, route.auth)
                token = bearer_token(request)
                if token:
                    await self.limiter.check_requests(token)
                payload: Any = None
                if route.body is not None:
                    payload = await _parse_body(request, route.body, self.limits)
                elif route.query is not None:
                    payload = _parse_query(request, route.query)
                data = await route.handler(
                    Context(request, caller, identity, self.pool, self.limiter, self.limits),
                    payload,
                )
                if route.activity and identity is not None:
                    self.on_activity(identity)
            except ApiError as exc:
                return route.errors(exc)
            except web.HTTPException:
                raise  # aiohttp's own (a body over the limit): the envelope_errors middleware's
            except Exception as exc:
                # The database away (down, restarting, its connection cut mid-query): a 503 to
                # retry, not a 500. What breaks otherwise is ours: logged, never echoed.
                if database_unavailable(exc):
                    log.warning("database unavailable in %s %s: %r", route.method, route.path, exc)
                    return route.errors(
                        ApiError(503, "unavailable", UNAVAILABLE_MESSAGE, headers=retry_after())
                    )
                mapped = map_database_error(exc) if isinstance(exc, asyncpg.PostgresError) else None
                if mapped is None:
                    log.exception("error in %s %s", route.method, route.path)
                    return route.errors(ApiError(500, "internal_error", INTERNAL_MESSAGE))
                return route.errors(mapped)
            if isinstance(data, web.StreamResponse):
                return data
            return ok(data, status=route.status)

        return handle

    async def _authenticate(
        self, request: web.Request, auth: Auth
    ) -> tuple[Caller, Identity | None]:
        if auth == "public":
            return Caller.anon(), None
        token = bearer_token(request)
        if not token:
            raise ApiError(401, "unauthorized", "an Authorization: Bearer token is required")
        try:
            identity = await self.authenticator.identify(token)
        except AuthUnavailable as exc:
            # Not the token's fault: the database that checks it is away.
            raise ApiError(503, "unavailable", UNAVAILABLE_MESSAGE, headers=retry_after()) from exc
        except AuthError as exc:
            raise ApiError(exc.status, "unauthorized", exc.message) from exc
        caller = caller_of(identity)
        if auth == "service" and caller.role != "service_role":
            raise ApiError(403, "forbidden", "this endpoint needs the service_role key")
        if caller.role == "anon" and auth != "any":
            raise ApiError(401, "unauthorized", "a staff token or a portal token is required")
        return caller, identity


def caller_of(identity: Identity) -> Caller:
    if identity.kind is Kind.STAFF:
        assert identity.user_id is not None
        return Caller.staff(identity.user_id)
    if identity.kind is Kind.CUSTOMER:
        assert identity.customer_id is not None
        return Caller.customer(identity.customer_id)
    if identity.kind is Kind.SERVICE:
        return Caller.service()
    return Caller.anon()


async def read_json(request: web.Request, limits: InputLimits) -> Any:
    """The request's JSON body (``{}`` when empty), within the depth limit, or an :class:`ApiError`.

    Nested past the limit, the refusal is a 422 that says so, also past the 1,024 levels where
    the decoder itself gives up.
    """
    raw = await request.read()
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise ApiError(422, "validation_error", depth_message(limits.max_json_depth)) from exc
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from exc
    if too_deep(data, limits.max_json_depth):
        raise ApiError(422, "validation_error", depth_message(limits.max_json_depth))
    return data


async def _parse_body(
    request: web.Request, model: type[BaseModel], limits: InputLimits
) -> BaseModel:
    data = await read_json(request, limits)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    raw = await request.read() or b"{}"
    try:
        # Strict: JSON types must be what the schema says ("true" is not a boolean).
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", _describe(exc)) from exc


#: Query parameters the official clients add to every request they make (realtime-js copies
#: its socket parameters into REST URLs); they are not the endpoint's.
_CLIENT_PARAMS = ("apikey", "vsn", "log_level")


def _parse_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    try:
        query = {k: v for k, v in request.query.items() if k not in _CLIENT_PARAMS}
        return model.model_validate(query)
    except ValidationError as exc:
        raise ApiError(422, "validation_error", _describe(exc)) from exc


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def map_database_error(exc: asyncpg.PostgresError) -> ApiError | None:
    """SQLSTATEs of docs/database.md to HTTP statuses; internal details are not echoed."""
    state = getattr(exc, "sqlstate", "") or ""
    message = getattr(exc, "message", "") or str(exc)
    if state == "P0002":
        return ApiError(404, "not_found", message)
    if state == "42501":
        return ApiError(403, "forbidden", message)
    # 22P05/22021: text or JSON PostgreSQL cannot store (a NUL character, bad encoding).
    # 22008/22003: a date or number out of range (a forged cursor).
    if state in ("22023", "22P02", "22001", "22P05", "22021", "22008", "22003", "23514", "23502"):
        return ApiError(422, "validation_error", message)
    if state == "23505":
        return ApiError(409, "conflict", message)
    if state == "23503":
        return ApiError(404, "not_found", "a referenced row does not exist")
    if state == "40P01" or state == "40001":
        return ApiError(409, "retry", "the request conflicted with another one; retry it")
    return None


_ENVELOPE_OK: dict[str, Any] = {
    "type": "object",
    "required": ["success", "version", "timestamp", "data"],
    "properties": {
        "success": {"const": True},
        "version": {"const": "v1"},
        "timestamp": {"type": "string"},
        "data": {},
    },
}
_ENVELOPE_ERROR = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"const": False},
        "version": {"const": "v1"},
        "timestamp": {"type": "string"},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}


UUID_SCHEMA: dict[str, Any] = {"type": "string", "format": "uuid"}
TIME_SCHEMA: dict[str, Any] = {"type": "string", "format": "date-time"}


def json_object(**properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema object whose listed properties are all present."""
    return {"type": "object", "required": list(properties), "properties": properties}


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    """The success envelope around a described ``data``, for a route's ``response``."""
    return {**_ENVELOPE_OK, "properties": {**_ENVELOPE_OK["properties"], "data": data}}


def openapi(api: Api, *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared route, from the same models that validate."""
    paths: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {
        "Envelope": _ENVELOPE_OK,
        "Error": _ENVELOPE_ERROR,
    }
    for route in api.routes:
        success = {
            "description": "success",
            "content": {
                "application/json": {
                    "schema": route.response
                    if route.response is not None
                    else {"$ref": "#/components/schemas/Envelope"}
                }
            },
        }
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "tags": list(route.tags),
            "responses": {
                str(route.status): success,
                **{str(status): success for status in route.also_statuses},
                "default": {
                    "description": "error",
                    "content": {
                        "application/json": {
                            "schema": route.error_schema
                            if route.error_schema is not None
                            else {"$ref": "#/components/schemas/Error"}
                        }
                    },
                },
            },
        }
        for status in route.empty_statuses:
            op["responses"][str(status)] = {"description": "success, no body"}
        if route.auth != "public":
            op["security"] = [{"bearer": []}]
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": route.path_schemas.get(name, {"type": "string"}),
            }
            for name in re.findall(r"{(\w+)}", route.path)
        ]
        if route.query is not None:
            schema = route.query.model_json_schema(by_alias=True)
            required = set(schema.get("required", []))
            for name, prop in schema.get("properties", {}).items():
                params.append(
                    {"name": name, "in": "query", "required": name in required, "schema": prop}
                )
        if params:
            op["parameters"] = params
        if route.body is not None:
            schema = route.body.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}"
            )
            for name, definition in schema.pop("$defs", {}).items():
                components[name] = definition
            components[route.body.__name__] = schema
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}
                    }
                },
            }
        elif route.request_schema is not None:
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": route.request_schema}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
