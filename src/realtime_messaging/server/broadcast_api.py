"""REST broadcast: ``POST /realtime/v1/api/broadcast`` and ``.../broadcast/{topic}/events/{event}``.

Authorized like a join: the token must allow joining each topic. Answers 202 with no body.
Counted against the same per-token request budget as the rest of the HTTP API, and held to the
same JSON limits.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from ..broker import Envelope
from ..domain.identity import Identity
from .api.errors import ApiError
from .api.framework import read_json
from .auth import AuthError, AuthUnavailable
from .fanout import broadcast_payload
from .http import bearer_token, error, unavailable
from .realtime import RealtimeServer

MAX_MESSAGES = 100


class BroadcastApi:
    def __init__(self, realtime: RealtimeServer) -> None:
        self._realtime = realtime

    def routes(self) -> list[web.RouteDef]:
        routes = []
        for prefix in ("/realtime/v1/api",):
            routes.append(web.post(f"{prefix}/broadcast", self.batch))
            routes.append(web.post(f"{prefix}/broadcast/{{topic}}/events/{{event}}", self.single))
        return routes

    async def _identity(self, request: web.Request) -> Identity | web.Response:
        """The caller, once its request fits its budget; else the refusal to send."""
        token = bearer_token(request)
        try:
            identity = await self._realtime.auth.identify(token)
            assert token is not None  # identify refuses a missing token
            await self._realtime.limiter.check_requests(token)
        except AuthUnavailable:
            return unavailable()
        except AuthError as exc:
            return error(exc.status, "unauthorized", exc.message)
        except ApiError as exc:
            return error(exc.status, exc.code, exc.message, headers=exc.headers)
        return identity

    async def _json(self, request: web.Request) -> Any:
        try:
            return await read_json(request, self._realtime.settings.input_limits)
        except ApiError as exc:
            return error(exc.status, exc.code, exc.message)

    async def batch(self, request: web.Request) -> web.Response:
        identity = await self._identity(request)
        if isinstance(identity, web.Response):
            return identity
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return error(422, "validation_error", "messages must be a non-empty list")
        if len(messages) > MAX_MESSAGES:
            return error(422, "validation_error", f"at most {MAX_MESSAGES} messages per request")
        checked: list[tuple[str, str, Any]] = []
        for i, item in enumerate(messages):
            problem = _check_message(item)
            if problem:
                return error(422, "validation_error", f"messages[{i}]: {problem}")
            if not await self._realtime.may_join(identity, item["topic"]):
                return error(403, "forbidden", f"not allowed to broadcast to {item['topic']}")
            checked.append((item["topic"], item["event"], item["payload"]))
        for topic, event, payload in checked:
            self._publish(topic, event, payload)
        return web.Response(status=202)

    async def single(self, request: web.Request) -> web.Response:
        identity = await self._identity(request)
        if isinstance(identity, web.Response):
            return identity
        topic, event = request.match_info["topic"], request.match_info["event"]
        if not await self._realtime.may_join(identity, topic):
            return error(403, "forbidden", f"not allowed to broadcast to {topic}")
        raw = await request.read()
        if request.content_type == "application/octet-stream":
            self._publish_binary(topic, event, raw)
            return web.Response(status=202)
        payload = await self._json(request)
        if isinstance(payload, web.Response):
            return payload
        self._publish(topic, event, payload)
        return web.Response(status=202)

    def _publish(self, topic: str, event: str, payload: Any) -> None:
        meta = {"id": str(uuid.uuid4())}
        full = f"realtime:{topic}"
        self._realtime.broker.publish(
            Envelope(full, "broadcast", broadcast_payload(event, payload, meta), meta=meta)
        )

    def _publish_binary(self, topic: str, event: str, raw: bytes) -> None:
        meta = {"id": str(uuid.uuid4())}
        full = f"realtime:{topic}"
        self._realtime.broker.publish(
            Envelope(
                full,
                "broadcast",
                broadcast_payload(event, None, meta),
                user_event=event,
                binary=raw,
                json_encoded=False,
                meta=meta,
            )
        )


def _check_message(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "must be an object"
    for name in ("topic", "event"):
        if not isinstance(item.get(name), str) or not item[name]:
            return f"{name} must be a non-empty string"
    if not isinstance(item.get("payload"), dict):
        return "payload must be an object"
    return None


def openapi_paths() -> dict[str, dict[str, Any]]:
    """The two REST broadcast routes for ``/openapi.json`` (they are plain aiohttp routes, not
    :class:`~.api.framework.Api` ones: Supabase's bodies and a bare 202)."""
    message = {
        "type": "object",
        "required": ["topic", "event", "payload"],
        "properties": {
            "topic": {"type": "string", "minLength": 1, "description": "without `realtime:`"},
            "event": {"type": "string", "minLength": 1},
            "payload": {"type": "object"},
            "private": {"type": "boolean"},
        },
    }
    responses = {
        "202": {"description": "accepted: published to the topics' subscribers (no body)"},
        "default": {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        },
    }
    common = {"tags": ["broadcast"], "security": [{"bearer": []}], "responses": responses}
    return {
        "/realtime/v1/api/broadcast": {
            "post": {
                **common,
                "summary": "Broadcast messages to topics, as supabase-js's channel.send() "
                "before joining (up to 100; each topic must be joinable with this token)",
                "operationId": "broadcast",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["messages"],
                                "properties": {
                                    "messages": {
                                        "type": "array",
                                        "minItems": 1,
                                        "maxItems": MAX_MESSAGES,
                                        "items": message,
                                    }
                                },
                            }
                        }
                    },
                },
            }
        },
        "/realtime/v1/api/broadcast/{topic}/events/{event}": {
            "post": {
                **common,
                "summary": "Broadcast one event to a topic; the body is the payload (JSON, or "
                "application/octet-stream for a binary broadcast)",
                "operationId": "broadcast_event",
                "parameters": [
                    {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    for name in ("topic", "event")
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {}},
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            }
                        },
                    },
                },
            }
        },
    }
