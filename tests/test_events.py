"""The event contract: what is accepted, and that every rejection says why."""

import dataclasses
import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.events import FeedbackEvent, InvalidEvent, RatingScale, parse_event


def raw(**fields):
    base = {
        "event_id": "e1",
        "ts": 1_700_000_000,
        "kind": "rating",
        "account_id": "a1",
        "item_id": "i1",
        "rating": 4,
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"ts": "2024-05-01T12:00:00Z"},
        {"ts": "2024-05-01T12:00:00.123+02:00"},
        {"kind": "review", "text": "great value"},
        {"kind": "label", "rating": None, "label": "positive", "text": "fine"},
        {"kind": "vote", "rating": ..., "label": "helpful"},
        {"account_created_at": "2020-01-01T00:00:00Z", "ip": "h1", "device_id": "d1"},
        {"attrs": {"lang": "en"}, "unknown_field": [1, 2]},
    ],
)
def test_valid_events_are_accepted(fields):
    event = parse_event(raw(**fields))
    assert isinstance(event, FeedbackEvent), event


def test_unknown_fields_are_accepted():
    """The event keeps none of them; the raw value, which every topic gets, keeps them
    (test_pipeline: test_unknown_fields_reach_the_output_topics_unchanged)."""
    event = parse_event(raw(source="app", attrs={"x": 1}))
    assert isinstance(event, FeedbackEvent)
    assert event.attrs == {"x": 1}
    assert not hasattr(event, "source")


def test_rfc3339_and_epoch_agree():
    a = parse_event(raw(ts="2023-11-14T22:13:20Z"))
    b = parse_event(raw(ts=1_700_000_000))
    assert isinstance(a, FeedbackEvent) and isinstance(b, FeedbackEvent)
    assert a.ts == b.ts == 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "error_class", "needle"),
    [
        (b"not json", "json", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "json", "expected a JSON object"),
        (None, "empty", "no value"),
        (raw(event_id=...), "contract", "event_id"),
        (raw(event_id=""), "contract", "event_id"),
        (raw(event_id="x" * 129), "contract", "event_id"),
        (raw(kind="like"), "contract", "kind"),
        (raw(rating="five"), "contract", "rating"),
        (raw(rating=True), "contract", "rating"),
        (raw(rating=None), "contract", "needs 'rating'"),
        (raw(rating=7), "range", "outside the scale"),
        (raw(rating=0), "range", "outside the scale"),
        (raw(kind="review", text=None), "contract", "needs non-empty 'text'"),
        (raw(kind="review", text="x" * 20_001), "contract", "text"),
        (raw(kind="label", label=None), "contract", "needs 'label'"),
        (raw(ts="yesterday"), "contract", "not RFC 3339"),
        (raw(ts="2024-05-01T12:00:00"), "contract", "time zone"),
        (raw(ts=1_700_000_000_000), "contract", "outside 1990..2200"),
        (raw(ts=None), "contract", "ts"),
        (raw(account_id=42), "contract", "account_id"),
        (
            b'{"event_id":"e","ts":1700000000,"kind":"rating","account_id":"a","item_id":"i",'
            b'"rating":NaN}',
            "json",
            "not valid",
        ),
    ],
)
def test_invalid_events_say_why(value, error_class, needle):
    result = parse_event(value)
    assert isinstance(result, InvalidEvent)
    assert result.error_class == error_class
    assert needle in result.error


def test_invalid_event_keeps_its_id_when_it_has_one():
    result = parse_event(raw(rating=9))
    assert isinstance(result, InvalidEvent) and result.event_id == "e1"


def test_scale_is_configurable():
    assert isinstance(parse_event(raw(rating=9), RatingScale(0, 10)), FeedbackEvent)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data):
    assert isinstance(parse_event(data), FeedbackEvent | InvalidEvent)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "ts",
                "kind",
                "account_id",
                "item_id",
                "rating",
                "text",
                "label",
                "account_created_at",
                "attrs",
                "other",
            ]
        ),
        json_values,
        max_size=11,
    )
)
def test_arbitrary_objects_never_raise(obj):
    result = parse_event(json.dumps(obj).encode())
    assert isinstance(result, FeedbackEvent | InvalidEvent)
    if isinstance(result, FeedbackEvent):
        assert math.isfinite(result.ts)


VALID = {
    "event_id": "e1",
    "ts": 1_700_000_000.0,
    "kind": "rating",
    "account_id": "a1",
    "item_id": "i1",
    "rating": 4,
}
edge_values = json_values | st.floats() | st.integers(min_value=-(2**70), max_value=2**70)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(VALID) + ["text", "label", "ip"]), edge_values))
def test_fast_json_path_accepts_exactly_what_the_careful_path_accepts(changes):
    """parse_event validates straight from JSON and only falls back to orjson + dict to
    explain a failure; both must agree on every event, near-valid ones included."""
    from streamguard.events import _parse_slowly

    value = json.dumps({**VALID, **changes}).encode()  # may hold Infinity, NaN, big ints
    fast, careful = parse_event(value), _parse_slowly(value, RatingScale())
    assert type(fast) is type(careful)
    if isinstance(fast, FeedbackEvent):
        assert dataclasses.asdict(fast) == dataclasses.asdict(careful)  # type: ignore[arg-type]
