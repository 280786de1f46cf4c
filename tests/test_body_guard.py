"""The body guard's pure parts: the structural scan against a parser's view of the same
JSON, one parse that refuses repeated keys, limits that fit the schema, and the settings
that tune them. The live-server behaviour is in ``test_reliability_api.py``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import largest_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.guard import BodyRejectedError, is_json_content_type, json_shape, parse_json
from scoring.schema import MAX_BATCH, MAX_ID_LENGTH, MAX_LOOKBACK_DAYS, PredictRequest
from scoring.settings import MAX_JSON_KEYS, BodyLimits, Settings, SettingsError

LIMITS = BodyLimits()
# Strings full of what the scan must not mistake for structure.
TRICKY_TEXT = st.text(alphabet=st.sampled_from(list('[]{}:,"\\/ aé€\n\t\x00\u2028')), max_size=12)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TRICKY_TEXT,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(TRICKY_TEXT, children, max_size=4),
    max_leaves=30,
)


SCALARS = st.none() | st.booleans() | st.integers() | TRICKY_TEXT
SHALLOW_VALUES = SCALARS | st.lists(SCALARS, max_size=3)


def reference_shape(value: Any, level: int = 0) -> tuple[int, int, int]:
    """(depth, containers, keys) from the parsed value itself."""
    if isinstance(value, list | dict):
        children = list(value.values()) if isinstance(value, dict) else value
        keys = len(value) if isinstance(value, dict) else 0
        shapes = [reference_shape(c, level + 1) for c in children]
        return (
            max([level + 1, *(s[0] for s in shapes)]),
            1 + sum(s[1] for s in shapes),
            keys + sum(s[2] for s in shapes),
        )
    return (level, 0, 0)


def dumps_any_way(value: Any, style: int) -> bytes:
    indent, separators = [(None, None), (2, None), (None, (",", ":")), ("\t", (" , ", " : "))][
        style % 4
    ]
    text = json.dumps(value, ensure_ascii=style >= 4, indent=indent, separators=separators)
    return text.encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, style=st.integers(0, 7))
def test_the_scan_sees_the_structure_a_parser_sees(value: Any, style: int) -> None:
    body = dumps_any_way(value, style)
    shape = json_shape(body)
    assert (shape.depth, shape.containers, shape.keys) == reference_shape(value)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, style=st.integers(0, 7))
def test_one_parse_returns_what_json_loads_returns(value: Any, style: int) -> None:
    body = dumps_any_way(value, style)
    depth, containers, keys = reference_shape(value)
    within = depth <= LIMITS.max_depth and containers <= LIMITS.max_containers
    if body.strip() and within and keys <= LIMITS.max_keys:
        assert parse_json(body, LIMITS) == json.loads(body)


@st.composite
def bodies_with_a_repeated_key(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid JSON text in which one object, at some depth, has a key twice."""
    key = draw(TRICKY_TEXT)
    first, second = draw(SHALLOW_VALUES), draw(SHALLOW_VALUES)
    others = draw(
        st.dictionaries(TRICKY_TEXT.filter(lambda k: k != key), SHALLOW_VALUES, max_size=3)
    )
    members = [json.dumps(k) + ":" + json.dumps(v) for k, v in others.items()]
    position = draw(st.integers(0, len(members)))
    members.insert(position, json.dumps(key) + ":" + json.dumps(first))
    members.append(json.dumps(key) + ":" + json.dumps(second))
    text = "{" + ",".join(members) + "}"
    for _ in range(draw(st.integers(0, 3))):  # bury it (at most 8 deep in all)
        text = draw(st.sampled_from(['{"items": [%s]}', "[1, %s]", '{"a": {"b": %s}}'])) % text
    return text.encode(), key


@settings(max_examples=200, deadline=None)
@given(case=bodies_with_a_repeated_key())
def test_a_key_repeated_in_one_object_is_refused_naming_it(case: tuple[bytes, str]) -> None:
    body, key = case
    with pytest.raises(BodyRejectedError) as refused:
        parse_json(body, LIMITS)
    assert refused.value.status == 422
    (error,) = refused.value.detail
    assert error["type"] == "duplicate_key" and error["loc"] == ["body", key[:60]]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"", "missing"),
        (b"  \r\n", "missing"),
        (b'{"a": ', "json_invalid"),
        (json.dumps({"a": "b"}).encode("utf-16"), "json_invalid"),  # JSON must be UTF-8
        (b'{"a": "\xff"}', "json_invalid"),
        (b'{"a": ' + b"7" * 5000 + b"}", "json_invalid"),
        (b"[" * 9 + b"]" * 9, "json_too_deep"),
        (b"[" + b",".join([b"[]"] * (LIMITS.max_containers)) + b"]", "json_too_large"),
        (
            b"{" + b",".join(b'"k%d":0' % i for i in range(LIMITS.max_keys + 1)) + b"}",
            "json_too_large",
        ),
    ],
)
def test_bodies_refused_before_or_by_the_parse_say_why(body: bytes, kind: str) -> None:
    with pytest.raises(BodyRejectedError) as refused:
        parse_json(body, LIMITS)
    assert refused.value.status == 422 and refused.value.detail[0]["type"] == kind


def test_a_utf8_byte_order_mark_is_ignored() -> None:
    assert parse_json(b'\xef\xbb\xbf{"a": 1}', LIMITS) == {"a": 1}


def largest_batch_with_lookback() -> bytes:
    """conftest's largest batch, each item also declaring the longest ``lookback_days``: every
    field a request item can carry."""
    value = json.loads(largest_batch())
    for item in value["items"]:
        item["lookback_days"] = MAX_LOOKBACK_DAYS
    return json.dumps(value).encode()


def test_the_largest_valid_batch_is_within_every_limit() -> None:
    body = largest_batch_with_lookback()
    shape = json_shape(body)
    item_fields = set(json.loads(body)["items"][0])
    assert item_fields == set(PredictRequest.model_fields)  # no field left out
    assert len(body) <= LIMITS.max_bytes
    assert shape.keys == MAX_JSON_KEYS <= LIMITS.max_keys  # the limit is exactly this
    assert shape.depth == 3 <= LIMITS.max_depth
    assert shape.containers == MAX_BATCH + 2 <= LIMITS.max_containers
    assert parse_json(body, LIMITS)["items"][0]["customer_id"] == "0" * MAX_ID_LENGTH


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/problem+json", True),
        ("application/x-www-form-urlencoded", False),
        ("text/plain", False),
        ("text/json", False),
        ("application/jsonx", False),
        ("", False),
        (None, False),
    ],
)
def test_json_content_types(value: str | None, ok: bool) -> None:
    assert is_json_content_type(value) is ok


def test_settings_come_from_the_environment_and_bad_values_name_the_variable() -> None:
    env = {
        "MODEL_DIR": "artifacts/trained",
        "MODEL_CONTAINER": " models ",
        "SCORING_BODY_TIMEOUT_S": "2.5",
        "SCORING_MAX_PENDING_BODIES": "4",
    }
    s = Settings.from_env(env)
    assert s.model_dir.parts[-2:] == ("artifacts", "trained") and s.model_dir.is_absolute()
    assert (s.model_container, s.model_name) == ("models", "current")
    assert (s.body.read_timeout_s, s.body.max_pending) == (2.5, 4)
    assert Settings.from_env({}) == Settings()
    for name, value in [
        ("SCORING_BODY_TIMEOUT_S", "soon"),
        ("SCORING_BODY_TIMEOUT_S", "0"),
        ("SCORING_BODY_TIMEOUT_S", "nan"),
        ("SCORING_BODY_TIMEOUT_S", "inf"),
        ("SCORING_MAX_PENDING_BODIES", "2.5"),
        ("SCORING_MAX_PENDING_BODIES", "-1"),
    ]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})
