"""The ``phx_join`` payload: configuration, postgres_changes bindings, access token.

Reference section 2.2: every part of ``config`` may be missing or null, booleans may be the
strings ``"true"``/``"false"``, unknown keys are ignored. Section 2.3: the reply echoes each
binding verbatim plus a stable, truthy ``id`` below 2**27.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from realtime_messaging.protocol.errors import ProtocolError
from realtime_messaging.protocol.join import (
    JoinConfig,
    JoinError,
    binding_id,
    parse_binding,
    parse_join_payload,
)

TODOS_INSERT = {"event": "INSERT", "schema": "public", "table": "todos", "filter": "id=eq.46"}


def refused(payload: Any) -> str:
    """The reason a join payload is refused with."""
    with pytest.raises(JoinError) as info:
        parse_join_payload(payload)
    return info.value.reason


# -- what the official clients send ---------------------------------------------------------


def test_server_reads_realtime_py_join_payload() -> None:
    payload = {
        "config": {
            "broadcast": {"self": True, "ack": True},
            "presence": {"key": "py-user", "enabled": True},
            "private": False,
            "postgres_changes": [TODOS_INSERT],
        },
        "access_token": "<token>",
    }
    config, token = parse_join_payload(payload)
    assert token == "<token>"
    assert config.broadcast_self is True
    assert config.broadcast_ack is True
    assert config.presence_key == "py-user"
    assert config.presence_enabled is True
    assert config.private is False
    [binding] = config.postgres_changes
    assert (binding.event, binding.schema, binding.table, binding.filter) == (
        "INSERT",
        "public",
        "todos",
        "id=eq.46",
    )


def test_server_accepts_realtime_py_null_broadcast() -> None:
    # supabase-py issue #1297: a config without broadcast is sent as "broadcast": null.
    payload = {
        "config": {
            "broadcast": None,
            "presence": {"key": "", "enabled": False},
            "private": False,
        },
        "access_token": "anon-key",
    }
    config, token = parse_join_payload(payload)
    assert (config.broadcast_self, config.broadcast_ack) == (False, False)
    assert token == "anon-key"


def test_server_reads_realtime_js_default_join_payload() -> None:
    payload = {
        "config": {
            "broadcast": {"ack": False, "self": False},
            "presence": {"key": "", "enabled": False},
            "postgres_changes": [],
            "private": False,
        },
        "access_token": "jwt",
        "version": "realtime-js/2.119.0",
    }
    assert parse_join_payload(payload) == (JoinConfig(), "jwt")


def test_server_accepts_realtime_js_first_join_without_access_token() -> None:
    config, token = parse_join_payload({"config": {"private": False}})
    assert token is None
    assert config == JoinConfig()


def test_unknown_keys_of_the_full_server_schema_are_ignored() -> None:
    payload = {
        "config": {
            "broadcast": {
                "ack": False,
                "self": False,
                "replay": {"since": 1763407103911, "limit": 10},
                "replication_ready": False,
            },
            "presence": {"key": "", "enabled": False},
            "postgres_changes": [
                {
                    "event": "INSERT",
                    "schema": "public",
                    "table": "todos",
                    "filter": "id=eq.46",
                    "select": ["id", "title"],
                }
            ],
            "private": False,
            "postgres_changes_options": {"wait": True, "timeout": 15000},
            "something_new": [1, 2, 3],
        },
        "access_token": "<jwt>",
        "version": "realtime-js/2.119.0",
    }
    config, token = parse_join_payload(payload)
    assert token == "<jwt>"
    assert len(config.postgres_changes) == 1


# -- missing and null parts -----------------------------------------------------------------


@pytest.mark.parametrize("payload", [None, {}, {"config": None}, {"config": {}}])
def test_empty_join_payload_means_defaults(payload: Any) -> None:
    assert parse_join_payload(payload) == (JoinConfig(), None)


@pytest.mark.parametrize("part", ["broadcast", "presence", "postgres_changes", "private"])
@pytest.mark.parametrize("absent", ["missing", "null"])
def test_each_config_part_may_be_missing_or_null(part: str, absent: str) -> None:
    config: dict[str, Any] = {
        "broadcast": {"ack": True, "self": True},
        "presence": {"key": "k", "enabled": True},
        "postgres_changes": [TODOS_INSERT],
        "private": True,
    }
    if absent == "missing":
        del config[part]
    else:
        config[part] = None
    parsed, _ = parse_join_payload({"config": config})
    defaults = JoinConfig()
    if part == "broadcast":
        assert (parsed.broadcast_ack, parsed.broadcast_self) == (False, False)
    elif part == "presence":
        assert (parsed.presence_key, parsed.presence_enabled) == ("", False)
    elif part == "postgres_changes":
        assert parsed.postgres_changes == ()
    else:
        assert parsed.private is defaults.private
    # The other parts are read as sent.
    if part != "private":
        assert parsed.private is True
    if part != "broadcast":
        assert parsed.broadcast_ack is True


@pytest.mark.parametrize("key", ["self", "ack"])
def test_null_broadcast_flags_mean_false(key: str) -> None:
    config, _ = parse_join_payload({"config": {"broadcast": {key: None}}})
    assert (config.broadcast_self, config.broadcast_ack) == (False, False)


def test_null_presence_key_means_a_generated_key_later() -> None:
    config, _ = parse_join_payload({"config": {"presence": {"key": None, "enabled": True}}})
    assert config.presence_key == ""
    assert config.presence_enabled is True


# -- flexible booleans ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False)])
def test_boolean_flags_accept_true_and_false_strings(text: str, value: bool) -> None:
    config, _ = parse_join_payload(
        {
            "config": {
                "broadcast": {"self": text, "ack": text},
                "presence": {"enabled": text},
                "private": text,
            }
        }
    )
    assert config.broadcast_self is value
    assert config.broadcast_ack is value
    assert config.presence_enabled is value
    assert config.private is value


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({"broadcast": {"self": "yes"}}, "broadcast.self"),
        ({"broadcast": {"ack": 1}}, "broadcast.ack"),
        ({"presence": {"enabled": []}}, "presence.enabled"),
        ({"private": {"value": True}}, "private"),
        ({"private": 0}, "private"),
    ],
)
def test_non_boolean_flags_refuse_the_join(config: dict[str, Any], name: str) -> None:
    reason = refused({"config": config})
    assert reason == f"InvalidJoinPayload: {name} must be a boolean"


# -- access token ---------------------------------------------------------------------------


def test_user_token_is_the_legacy_name_of_access_token() -> None:
    assert parse_join_payload({"user_token": "legacy"})[1] == "legacy"


def test_access_token_wins_over_user_token() -> None:
    assert parse_join_payload({"access_token": "new", "user_token": "old"})[1] == "new"


@pytest.mark.parametrize("token", [None, ""])
def test_empty_access_token_means_none(token: str | None) -> None:
    assert parse_join_payload({"access_token": token})[1] is None


@pytest.mark.parametrize("token", [1, True, ["jwt"], {"jwt": 1}])
def test_non_string_access_token_refuses_the_join(token: Any) -> None:
    assert refused({"access_token": token}) == "InvalidJoinPayload: access_token must be a string"


# -- presence key ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "expected"), [("user-1", "user-1"), (42, "42"), ("", "")])
def test_presence_key(key: Any, expected: str) -> None:
    config, _ = parse_join_payload({"config": {"presence": {"key": key}}})
    assert config.presence_key == expected


@pytest.mark.parametrize("key", [True, ["k"], {"k": 1}])
def test_presence_key_that_is_not_a_string_refuses_the_join(key: Any) -> None:
    reason = refused({"config": {"presence": {"key": key}}})
    assert reason == "InvalidJoinPayload: presence key must be a string"


# -- wrong shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [[], "config", 7, True])
def test_join_payload_that_is_not_an_object_is_refused(payload: Any) -> None:
    assert refused(payload) == "InvalidJoinPayload: the join payload must be an object"


@pytest.mark.parametrize("config", [[], "broadcast", 1, True])
def test_config_that_is_not_an_object_is_refused(config: Any) -> None:
    assert refused({"config": config}) == "InvalidJoinPayload: config must be an object"


@pytest.mark.parametrize("section", ["broadcast", "presence"])
@pytest.mark.parametrize("value", [[], "on", 1, True])
def test_config_section_that_is_not_an_object_is_refused(section: str, value: Any) -> None:
    reason = refused({"config": {section: value}})
    assert reason == f"InvalidJoinPayload: config.{section} must be an object"


@pytest.mark.parametrize("value", [{}, "INSERT", 1, True])
def test_postgres_changes_that_is_not_a_list_is_refused(value: Any) -> None:
    reason = refused({"config": {"postgres_changes": value}})
    assert reason == "InvalidJoinPayload: postgres_changes must be a list"


@pytest.mark.parametrize("entry", [None, "INSERT", ["INSERT"], 1])
def test_postgres_changes_entry_that_is_not_an_object_is_refused(entry: Any) -> None:
    reason = refused({"config": {"postgres_changes": [entry]}})
    assert reason == "InvalidJoinPayload: each postgres_changes entry must be an object"


@pytest.mark.parametrize("event", [None, "", "TRUNCATE", "INSERTS", 1, ["INSERT"]])
def test_postgres_changes_entry_with_a_bad_event_is_refused(event: Any) -> None:
    binding: dict[str, Any] = {"schema": "public", "table": "todos"}
    if event is not None:
        binding["event"] = event
    reason = refused({"config": {"postgres_changes": [binding]}})
    assert reason.startswith("InvalidJoinPayload: postgres_changes event must be one of")


@pytest.mark.parametrize("field", ["schema", "table", "filter"])
def test_postgres_changes_entry_with_a_non_string_field_is_refused(field: str) -> None:
    binding = {**TODOS_INSERT, field: 12}
    reason = refused({"config": {"postgres_changes": [binding]}})
    assert reason == f"InvalidJoinPayload: postgres_changes {field} must be a string"


def test_join_error_is_a_protocol_error_with_code_and_reason() -> None:
    error = JoinError("InvalidJoinPayload", "config must be an object")
    assert isinstance(error, ProtocolError)
    assert error.code == "InvalidJoinPayload"
    assert error.reason == "InvalidJoinPayload: config must be an object"
    assert str(error) == error.reason


# -- bindings and their reply entries -------------------------------------------------------


@pytest.mark.parametrize("event", ["*", "INSERT", "UPDATE", "DELETE"])
def test_every_postgres_changes_event_is_accepted(event: str) -> None:
    assert parse_binding({"event": event, "schema": "public"}).event == event


def test_binding_defaults() -> None:
    binding = parse_binding({"event": "*"})
    assert (binding.schema, binding.table, binding.filter) == ("public", None, None)


def test_binding_event_is_case_insensitive() -> None:
    assert parse_binding({"event": "insert", "table": "todos"}).event == "INSERT"


def test_reply_entry_echoes_the_client_binding_verbatim_plus_id() -> None:
    raw = {
        "event": "insert",
        "schema": "public",
        "table": "todos",
        "filter": "id=eq.46",
        "select": ["id", "title"],
        "extra": {"kept": True},
    }
    binding = parse_binding(raw)
    assert binding.reply_entry() == {**raw, "id": binding.id}
    assert raw == {
        "event": "insert",
        "schema": "public",
        "table": "todos",
        "filter": "id=eq.46",
        "select": ["id", "title"],
        "extra": {"kept": True},
    }


def test_reply_entry_keeps_missing_keys_missing() -> None:
    # realtime-js compares positionally and treats missing and null alike; echo what was sent.
    binding = parse_binding({"event": "*", "schema": "public"})
    assert binding.reply_entry() == {"event": "*", "schema": "public", "id": binding.id}


def test_bindings_keep_the_request_order() -> None:
    raws = [
        {"event": "DELETE", "schema": "public", "table": "b"},
        {"event": "INSERT", "schema": "public", "table": "a"},
        {"event": "*", "schema": "private", "table": "c", "filter": "x=eq.1"},
    ]
    config, _ = parse_join_payload({"config": {"postgres_changes": raws}})
    entries = [b.reply_entry() for b in config.postgres_changes]
    assert [{k: v for k, v in e.items() if k != "id"} for e in entries] == raws


def test_binding_id_is_a_truthy_integer_below_2_to_the_27() -> None:
    binding = parse_binding(TODOS_INSERT)
    assert type(binding.id) is int
    assert 0 < binding.id < 2**27


def test_identical_bindings_get_identical_ids() -> None:
    first = parse_binding(dict(TODOS_INSERT))
    second = parse_binding(orjson.loads(orjson.dumps(TODOS_INSERT)))
    assert first.id == second.id


@pytest.mark.parametrize(
    "same",
    [
        {"event": "insert", "schema": "public", "table": "todos", "filter": "id=eq.46"},
        {"event": "INSERT", "table": "todos", "filter": "id=eq.46"},
        {"event": "INSERT", "schema": None, "table": "todos", "filter": "id=eq.46"},
    ],
)
def test_equivalent_spellings_of_a_binding_get_the_same_id(same: dict[str, Any]) -> None:
    assert parse_binding(same).id == parse_binding(TODOS_INSERT).id


@pytest.mark.parametrize(
    "other",
    [
        {**TODOS_INSERT, "event": "UPDATE"},
        {**TODOS_INSERT, "schema": "private"},
        {**TODOS_INSERT, "table": "notes"},
        {**TODOS_INSERT, "filter": "id=eq.47"},
        {"event": "INSERT", "schema": "public", "table": "todos"},
    ],
)
def test_different_bindings_get_different_ids(other: dict[str, Any]) -> None:
    assert parse_binding(other).id != parse_binding(TODOS_INSERT).id


def test_binding_id_is_the_same_in_every_process() -> None:
    code = (
        "from realtime_messaging.protocol.join import binding_id;"
        "print(binding_id('INSERT', 'public', 'todos', 'id=eq.46'))"
    )
    ids = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert ids == {str(binding_id("INSERT", "public", "todos", "id=eq.46"))}


# -- properties -----------------------------------------------------------------------------

optional_text = st.none() | st.text(st.characters(exclude_categories=["Cs"]), max_size=30)


@given(
    event=st.sampled_from(["*", "INSERT", "UPDATE", "DELETE"]),
    schema=st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
    table=optional_text,
    filter_=optional_text,
)
def test_every_binding_id_is_truthy_and_below_2_to_the_27(
    event: str, schema: str, table: str | None, filter_: str | None
) -> None:
    assert 0 < binding_id(event, schema, table, filter_) < 2**27


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["true", "false", "INSERT", "*", "public"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "config",
                    "broadcast",
                    "presence",
                    "postgres_changes",
                    "private",
                    "self",
                    "ack",
                    "key",
                    "enabled",
                    "event",
                    "schema",
                    "table",
                    "filter",
                    "access_token",
                    "user_token",
                ]
            )
            | st.text(max_size=5),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@given(json_values)
def test_any_join_payload_is_parsed_or_refused_with_a_join_error(payload: Any) -> None:
    try:
        config, token = parse_join_payload(payload)
    except JoinError as exc:
        assert exc.reason.startswith("InvalidJoinPayload: ")
        return
    assert isinstance(config, JoinConfig)
    assert token is None or (isinstance(token, str) and token)
    for binding in config.postgres_changes:
        assert 0 < binding.id < 2**27


def test_resume_position_is_read_from_each_supported_place() -> None:
    binding = [{"event": "*", "schema": "public", "table": "customer_messages"}]
    canonical = {"config": {"postgres_changes": binding, "resume": {"position": 7}}}
    js_style = {
        "config": {
            "postgres_changes": binding,
            "postgres_changes_options": {"resume": {"position": "8"}},
        }
    }
    py_style = {"config": {"postgres_changes": binding}, "resume": {"position": 9}}
    assert parse_join_payload(canonical)[0].resume_position == 7
    assert parse_join_payload(js_style)[0].resume_position == 8
    assert parse_join_payload(py_style)[0].resume_position == 9
    assert parse_join_payload({"config": {"postgres_changes": binding}})[0].resume_position is None


def test_a_bad_resume_position_is_refused() -> None:
    for bad in ({"position": -1}, {"position": "x"}, {"position": True}, "7", {"nope": 1}):
        with pytest.raises(JoinError) as info:
            parse_join_payload({"config": {"resume": bad}})
        assert (
            info.value.reason
            == "InvalidJoinPayload: resume.position must be a non-negative integer"
        )
