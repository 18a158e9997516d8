"""Spans, instants and ages as operators type and read them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from refundcore.durations import format_age, parse_duration, parse_since
from refundcore.errors import ValidationError

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        (" 1H30m ", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1w2d", timedelta(days=9)),
    ],
)
def test_spans(text: str, span: timedelta) -> None:
    assert parse_duration(text, field="older-than") == span


@pytest.mark.parametrize("text", ["", "1", "h", "1 h", "-1h", "1.5h", "0s", "1y", "99999999d"])
def test_bad_spans_name_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_duration(text, field="older-than")
    assert refused.value.field == "older-than"


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2030-06-01", datetime(2030, 6, 1, tzinfo=timezone.utc)),
        ("2030-06-01T08:30", datetime(2030, 6, 1, 8, 30, tzinfo=timezone.utc)),
        ("2030-06-01T08:30:00Z", datetime(2030, 6, 1, 8, 30, tzinfo=timezone.utc)),
        ("2030-06-01T16:30+08:00", datetime(2030, 6, 1, 8, 30, tzinfo=timezone.utc)),
        ("2h", NOW - timedelta(hours=2)),
    ],
)
def test_instants(text: str, instant: datetime) -> None:
    assert parse_since(text, field="since", now=NOW) == instant


@pytest.mark.parametrize(
    "text", ["yesterday", "2030-13-01", "2030-06-31", "01/06/2030", "9999-12-31T23:59:59-01:00"]
)
def test_bad_instants_name_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_since(text, field="since", now=NOW)
    assert refused.value.field == "since"


@given(st.text(max_size=40))
def test_any_text_is_an_instant_or_a_clear_refusal(text: str) -> None:
    try:
        instant = parse_since(text, field="since", now=NOW)
    except ValidationError as refused:
        assert refused.field == "since"
    else:
        assert instant.tzinfo is not None and instant.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(seconds=-5), "0s"),
        (timedelta(seconds=45), "45s"),
        (timedelta(minutes=12, seconds=5), "12m 05s"),
        (timedelta(hours=3, minutes=5, seconds=59), "3h 05m"),
        (timedelta(days=2, hours=4), "2d 04h"),
    ],
)
def test_ages(span: timedelta, text: str) -> None:
    assert format_age(span) == text
