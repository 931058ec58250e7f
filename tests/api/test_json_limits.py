"""Issue 12, findings 2 and 6: JSON nested past the limit is refused at every door, clearly.

Reported: ``POST /rest/v1/rpc/update_user_presence`` with ``metadata`` nested ~250 levels was
accepted (and then broke the change feed); at 300 levels it answered 500. Every door now
refuses a document nested deeper than ``RTM_MAX_JSON_DEPTH`` (32): HTTP bodies with 422 and the
envelope, RPC arguments with 400 in PostgREST's shape (``22023``, docs/rest.md), socket pushes
with an error reply, and none of them with a 5xx. The fuzz test drives the API, RPC, REST broadcast and the socket with values of every depth
from flat to past the JSON decoder's own limit, from worker threads with plain blocking clients.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp
import requests
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from tests.conftest import RunningServer, Seed, running_server

LIMIT = 32
#: Levels past which the JSON decoder (orjson) refuses a document outright.
DECODER_LIMIT = 1024
UNLIMITED = {
    "rate_requests": "10000000/minute",
    "rate_typing": "10000000/minute",
    "rate_presence": "10000000/minute",
    "rate_read_receipts": "10000000/minute",
}

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=4))


@st.composite
def nested(draw: st.DrawFn) -> tuple[Any, int]:
    """A JSON value of an exact depth (arrays and objects with scalar siblings), and the depth."""
    depth = draw(st.one_of(st.integers(0, LIMIT + 3), st.integers(LIMIT + 4, DECODER_LIMIT + 50)))
    value: Any = draw(_scalars)
    for _ in range(depth):
        siblings = draw(st.lists(_scalars, max_size=2))
        if draw(st.booleans()):
            value = [*siblings, value]
        else:
            value = {**{f"s{i}": s for i, s in enumerate(siblings)}, "v": value}
    return value, depth


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _refused_with_envelope(response: requests.Response) -> None:
    assert response.status_code == 422, (response.status_code, response.text[:300])
    body = response.json()
    assert body["success"] is False and body["error"]["code"] == "validation_error", body
    assert f"deeper than {LIMIT} levels" in body["error"]["message"], body


def _refused_postgrest(response: requests.Response) -> None:
    assert response.status_code == 400, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"code", "message", "details", "hint"} and body["code"] == "22023", body
    assert f"deeper than {LIMIT} levels" in body["message"], body


def fuzz_doors(srv: RunningServer, portal: str, customer: str) -> int:
    """Send generated values through every door; return how many were sent."""
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {portal}"
    base = srv.http_url
    refs = itertools.count(1)
    sent = 0
    with connect(f"{srv.ws_url}?apikey={portal}&vsn=1.0.0", max_size=None) as ws:

        def push(topic: str, event: str, payload: Any) -> dict[str, Any]:
            ref = str(next(refs))
            frame = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            ws.send(json.dumps(frame))
            while True:
                reply = json.loads(ws.recv(timeout=10))
                if reply["event"] == "phx_reply" and reply["ref"] == ref:
                    return dict(reply["payload"])

        joined = push("realtime:json-fuzz", "phx_join", {"config": {"broadcast": {"ack": True}}})
        assert joined["status"] == "ok", joined

        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=nested())
        @example(case=(_deep(LIMIT - 2), LIMIT - 2))  # the largest every door takes
        @example(case=(_deep(LIMIT - 1), LIMIT - 1))
        @example(case=(_deep(LIMIT), LIMIT))
        @example(case=(_deep(LIMIT + 1), LIMIT + 1))
        @example(case=(_deep(250), 250))  # as reported
        @example(case=(_deep(254), 254))  # past what the JSON encoder writes
        @example(case=(_deep(1030), 1030))  # past what the JSON decoder reads
        def run(case: tuple[Any, int]) -> None:
            nonlocal sent
            value, depth = case
            sent += 1
            metadata = {"v": value}  # the body nests two levels more: {"metadata": {"v": ...}}
            doors = [
                http.put(f"{base}/api/presence", json={"status": "online", "metadata": metadata}),
                http.post(
                    f"{base}/rest/v1/rpc/update_user_presence",
                    json={"customer_id": customer, "status": "online", "metadata": metadata},
                ),
            ]
            for response in doors:
                assert response.status_code < 500, response.text[:300]
                if depth + 2 > LIMIT and "/rest/v1/" in response.url:
                    _refused_postgrest(response)
                elif depth + 2 > LIMIT:
                    _refused_with_envelope(response)
                else:
                    assert response.status_code == 200, response.text[:300]
            rest = http.post(f"{base}/realtime/v1/api/broadcast/json-fuzz/events/e", json=value)
            if depth > LIMIT:
                _refused_with_envelope(rest)
            else:
                assert rest.status_code == 202, rest.text[:300]
            if depth + 1 > DECODER_LIMIT:
                return  # a frame the decoder refuses closes the socket (the test below)
            # The frame's payload nests one level more than the broadcast it carries.
            reply = push("realtime:json-fuzz", "broadcast", {"event": "e", "payload": value})
            if depth + 1 > LIMIT:
                assert reply["status"] == "error", reply
                assert f"deeper than {LIMIT} levels" in reply["response"]["reason"], reply
            else:
                assert reply["status"] == "ok", reply

        run()
    return sent


async def test_every_door_refuses_json_nested_past_the_limit(database_url: str, seed: Seed) -> None:
    async with running_server(database_url, **UNLIMITED) as srv:
        customer, portal = await seed.customer()
        sent = await asyncio.wait_for(
            asyncio.to_thread(fuzz_doors, srv, portal, str(customer)), 240
        )
        assert sent >= 60


async def test_deep_rpc_arguments_answer_400_not_500(server: RunningServer, seed: Seed) -> None:
    """The two reported requests: 250 levels (accepted, then broke the feed) and 300 (a 500)."""
    customer, portal = await seed.customer()
    async with aiohttp.ClientSession() as http:
        for depth in (250, 300):
            async with http.post(
                f"{server.http_url}/rest/v1/rpc/update_user_presence",
                json={"customer_id": str(customer), "status": "online", "metadata": _deep(depth)},
                headers={"Authorization": f"Bearer {portal}"},
            ) as response:
                body = await response.json()
                assert response.status == 400, (depth, body)
                assert body["code"] == "22023", body
        async with http.post(
            f"{server.http_url}/rest/v1/rpc/update_user_presence",
            json={"customer_id": str(customer), "status": "online", "metadata": {"x": "y" * 9000}},
            headers={"Authorization": f"Bearer {portal}"},
        ) as response:
            body = await response.json()
            assert response.status == 400, body
            assert "metadata is larger than 8192 bytes" in body["message"], body


async def test_a_frame_past_the_decoders_depth_closes_the_socket_clearly(
    server: RunningServer, seed: Seed
) -> None:
    """A frame nested past 1,024 levels cannot be read at all, so no push can be answered:
    the socket closes with 1007 (invalid payload) and a reason that says why."""
    _, portal = await seed.customer()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.ws_url, params={"apikey": portal}) as ws:
            depth = DECODER_LIMIT + 5
            payload = '{"a":' * depth + "1" + "}" * depth
            await ws.send_str(
                '{"topic":"realtime:x","event":"broadcast","ref":"1","payload":' + payload + "}"
            )
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.CLOSE, message
            assert ws.close_code == 1007
            assert "depth limit" in message.extra, message
