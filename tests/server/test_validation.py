from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.core.errors import ApiError
from server.core.validation import (
    MAX_CLEAN_AGE_S,
    MAX_DELAY_S,
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    TASK_FIELDS,
    clean_age,
    json_body,
    page,
    repeat_fields,
    task_request,
    upload_options,
    whole_number,
)
from server.web.http.error_handlers import status_of


def test_upload_options_defaults_and_values() -> None:
    assert upload_options({}).priority == "normal"
    assert upload_options({}).delay_s == 0
    assert upload_options({"priority": "HIGH", "delay": " 30 "}).delay_s == 30
    assert upload_options({"priority": "HIGH"}).priority == "high"


@pytest.mark.parametrize("fields", [
    {"priority": "urgent"}, {"delay": "soon"}, {"delay": "-1"}, {"delay": str(MAX_DELAY_S + 1)},
])
def test_bad_upload_options_are_400(fields: dict[str, str]) -> None:
    with pytest.raises(ApiError) as caught:
        upload_options(fields)
    assert status_of(caught.value) == 400


def test_page_bounds() -> None:
    assert page({}) == (50, None)
    assert page({"limit": "5", "before": "abc"}) == (5, "abc")
    for bad in ("0", "201", "x", "²", "٣", "-1", " 5", ""):
        with pytest.raises(ApiError):
            page({"limit": bad})


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_task_request_fields() -> None:
    spec = task_request({"type": "t", "payload": {"a": 1}, "delay": 2.5, "priority": "low",
                         "max_attempts": 3}, now=NOW)
    assert (spec.task_type, spec.payload, spec.delay_s, spec.priority, spec.max_attempts) == (
        "t", {"a": 1}, 3, "low", 3)
    later = task_request({"type": "t", "run_at": "2026-01-01T00:01:00Z"}, now=NOW)
    assert later.delay_s == 60
    past = task_request({"type": "t", "run_at": "2025-01-01T00:00:00+00:00"}, now=NOW)
    assert past.delay_s == 0
    # 3.0 is an integer to JSON Schema (and to the OpenAPI document).
    assert task_request({"type": "t", "max_attempts": 3.0}, now=NOW).max_attempts == 3
    assert task_request({"type": "t", "priority": None}, now=NOW).priority == "normal"


@pytest.mark.parametrize("body", [
    [], {"payload": {}}, {"type": "t", "priority": "top"}, {"type": "t", "delay": -1},
    {"type": "t", "delay": 1, "run_at": "2026-01-01T00:00:00Z"},
    {"type": "t", "run_at": "tomorrow"}, {"type": "t", "run_at": "2026-01-01T00:00:00"},
    {"type": "t", "max_attempts": 0}, {"type": "t", "max_attempts": "3"},
    {"type": "t", "max_attempts": 2.5}, {"type": "t", "max_attempts": True},
    {"type": "t", "priority": {}}, {"type": "t", "priority": False}, {"type": "t", "priority": 0},
])
def test_bad_task_requests_are_400(body: object) -> None:
    with pytest.raises(ApiError) as caught:
        task_request(body, now=NOW)
    assert status_of(caught.value) == 400


def test_clean_age_from_body_query_or_default() -> None:
    assert clean_age({}, None, default=3600) == 3600
    assert clean_age({}, "60", default=3600) == 60
    assert clean_age({"older_than_s": 0}, "60", default=3600) == 0
    assert clean_age({"older_than_s": "120"}, None, default=3600) == 120
    assert clean_age({"older_than_s": MAX_CLEAN_AGE_S}, None, default=1) == MAX_CLEAN_AGE_S
    assert clean_age({"older_than_s": 600.0}, None, default=1) == 600  # JSON Schema's integer


@pytest.mark.parametrize(("body", "query"), [
    ([], None), ({"older_than_s": -1}, None), ({"older_than_s": True}, None),
    ({"older_than_s": None}, None), ({"older_than_s": 1.5}, None),
    ({"older_than_s": float("nan")}, None),
    ({"older_than_s": float("inf")}, None), ({"older_than_s": 1e300}, None),
    ({"older_than_s": 10**30}, None), ({}, "99999999999999999999"), ({}, "-1"), ({}, "²"),
])
def test_bad_clean_ages_are_400(body: object, query: str | None) -> None:
    with pytest.raises(ApiError) as caught:
        clean_age(body, query, default=3600)
    assert status_of(caught.value) == 400


def test_repeat_fields() -> None:
    assert repeat_fields({"cron": " 0 7 * * * "}) == ("0 7 * * *", "UTC")
    assert repeat_fields({"cron": "0 7 * * *", "timezone": None}) == ("0 7 * * *", "UTC")
    assert repeat_fields({"cron": "* * * * *", "timezone": "Europe/Paris"})[1] == "Europe/Paris"


@pytest.mark.parametrize(("repeat", "code"), [
    ({}, "invalid_cron"), ([], "invalid_cron"), ({"cron": 5}, "invalid_cron"),
    ({"cron": "* * * * *", "timezone": {}}, "invalid_timezone"),
    ({"cron": "* * * * *", "timezone": 0}, "invalid_timezone"),
    ({"cron": "* * * * *", "timezone": ["UTC"]}, "invalid_timezone"),
])
def test_repeat_of_the_wrong_shape_is_422(repeat: object, code: str) -> None:
    with pytest.raises(ApiError) as caught:
        repeat_fields(repeat)
    assert (status_of(caught.value), caught.value.code) == (422, code)


# -- hostile sizes: numbers, nesting, unknown fields, payloads ---------------------------------

FIVE_THOUSAND_DIGITS = "9" * 5000


@pytest.mark.parametrize("parse", [
    lambda: page({"limit": FIVE_THOUSAND_DIGITS}),
    lambda: clean_age({}, FIVE_THOUSAND_DIGITS, default=3600),
    lambda: clean_age({"older_than_s": FIVE_THOUSAND_DIGITS}, None, default=3600),
    lambda: upload_options({"delay": FIVE_THOUSAND_DIGITS}),
    lambda: json_body(b'{"type": "t", "payload": {"n": ' + FIVE_THOUSAND_DIGITS.encode() + b"}}"),
    lambda: json_body(b"[1e999]"),
])
def test_numbers_of_thousands_of_digits_are_422_not_a_crash(parse: object) -> None:
    # int() raises ValueError past 4,300 digits: that was a 500 with a traceback.
    with pytest.raises(ApiError) as caught:
        parse()  # type: ignore[operator]
    assert (status_of(caught.value), caught.value.code) == (422, "number_too_long")


def test_long_but_parseable_numbers_keep_their_400() -> None:
    with pytest.raises(ApiError) as caught:
        page({"limit": "9" * 40})
    assert (status_of(caught.value), caught.value.code) == (400, "invalid_limit")
    assert json_body(b'{"n": -' + b"7" * MAX_INT_DIGITS + b"}") == {"n": -int("7" * 100)}


@pytest.mark.parametrize("digits", [MAX_INT_DIGITS + 1, 200, 4300])
def test_integers_in_a_json_body_past_the_digit_cap_are_422(digits: int) -> None:
    # The README promised 422 past 100 digits; a 200-digit integer was accepted (only
    # int()'s own 4,300 stopped one).
    for raw in (b'{"n": ' + b"7" * digits + b"}", b"[1, -" + b"7" * digits + b"]"):
        with pytest.raises(ApiError) as caught:
            json_body(raw)
        assert (status_of(caught.value), caught.value.code) == (422, "number_too_long")
        assert "100 digits" in caught.value.message
    # Floats are only refused beyond their range.
    assert json_body(b"[0." + b"7" * 200 + b"]") == [float("0." + "7" * 200)]


def test_the_digit_depth_and_cron_caps_follow_their_settings() -> None:
    two_hundred = b"[" + b"7" * 200 + b"]"
    assert json_body(two_hundred, max_digits=200) == [int("7" * 200)]
    with pytest.raises(ApiError):
        json_body(two_hundred, max_digits=199)
    with pytest.raises(ApiError) as caught:
        whole_number("1" * 30, "expires", 20)
    assert caught.value.code == "number_too_long" and "20 digits" in caught.value.message
    assert whole_number("1" * 30, "expires", 30) == int("1" * 30)
    for parse in (lambda: page({"limit": "1" * 21}, max_digits=20),
                  lambda: clean_age({}, "1" * 21, default=1, max_digits=20),
                  lambda: upload_options({"delay": "1" * 21}, max_digits=20)):
        with pytest.raises(ApiError) as caught:
            parse()
        assert caught.value.code == "number_too_long"
    deep = b"[" * 11 + b"]" * 11
    assert json_body(deep, max_depth=11) == [[[[[[[[[[[]]]]]]]]]]]
    with pytest.raises(ApiError) as caught:
        json_body(deep, max_depth=10)
    assert caught.value.code == "too_deep" and "10 levels" in caught.value.message
    assert repeat_fields({"cron": "0 7 * * *"}, max_chars=9)[0] == "0 7 * * *"
    with pytest.raises(ApiError) as caught:
        repeat_fields({"cron": "0 7 * * 1-5"}, max_chars=9)
    assert caught.value.code == "invalid_cron" and "at most 9" in caught.value.message


def test_json_nested_100000_deep_is_400_not_a_crash() -> None:
    # json.loads raised RecursionError: a 500.
    with pytest.raises(ApiError) as caught:
        json_body(b"[" * 100_000 + b"]" * 100_000)
    assert (status_of(caught.value), caught.value.code) == (400, "too_deep")


def test_json_deeper_than_the_limit_is_400_and_up_to_it_is_fine() -> None:
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert json_body(nested) is not None
    objects = b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(ApiError) as caught:
        json_body(objects)
    assert caught.value.code == "too_deep"


@pytest.mark.parametrize("raw", [b"NaN", b"[Infinity]", b'{"a": -Infinity}', b"{", b"\xff"])
def test_what_is_not_json_is_400(raw: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        json_body(raw)
    assert status_of(caught.value) == 400


def test_every_documented_task_field_is_known() -> None:
    body = {"type": "t", "payload": {}, "priority": "low", "delay": None, "run_at": None,
            "max_attempts": 2, "repeat": None}
    assert set(body) == TASK_FIELDS
    assert task_request(body, now=NOW).priority == "low"


def test_unknown_task_fields_are_422() -> None:
    with pytest.raises(ApiError) as caught:
        task_request({"type": "t", "payload": {}, "priotity": "high"}, now=NOW)
    assert (status_of(caught.value), caught.value.code) == (422, "unknown_field")
    assert "'priotity'" in caught.value.message


def test_a_payload_over_the_cap_is_422_measured_as_compact_json() -> None:
    cap = 64 * 1024
    fits = {"text": "x" * (cap - len('{"text":""}'))}
    assert task_request({"type": "t", "payload": fits}, now=NOW,
                        max_payload_bytes=cap).payload is fits
    with pytest.raises(ApiError) as caught:
        task_request({"type": "t", "payload": {"text": "x" * cap}}, now=NOW,
                     max_payload_bytes=cap)
    assert (status_of(caught.value), caught.value.code) == (422, "invalid_payload")
    # Non-ASCII counts in UTF-8 bytes, as stored.
    with pytest.raises(ApiError):
        task_request({"type": "t", "payload": {"t": "é" * (cap // 2)}}, now=NOW,
                     max_payload_bytes=cap)


def test_a_cron_expression_of_thousands_of_characters_is_422() -> None:
    with pytest.raises(ApiError) as caught:
        repeat_fields({"cron": "1" * 5000 + " * * * *"})
    assert (status_of(caught.value), caught.value.code) == (422, "invalid_cron")


@pytest.mark.parametrize(("body", "code"), [
    ({"priority": "top"}, "bad_request"),  # no type: that first
    ({"max_attempts": 0, "priority": "top", "type": "t"}, "invalid_priority"),
    ({"run_at": "later", "delay": -1, "type": "t"}, "bad_request"),  # both given
    ({"max_attempts": 0, "run_at": "later", "type": "t"}, "invalid_run_at"),
    ({"max_attempts": 0, "delay": -1, "type": "t"}, "invalid_delay"),
    ({"max_attempts": 0, "payload": {"t": "x" * 100}, "type": "t"}, "invalid_payload"),
])
def test_a_body_with_several_bad_fields_gets_the_first_in_a_fixed_order(body: object,
                                                                        code: str) -> None:
    # Checked field by field against wire.requests.TaskRequest, in the order this always had
    # (msgspec alone would report the first bad field in the order the client sent them).
    with pytest.raises(ApiError) as caught:
        task_request(body, now=NOW, max_payload_bytes=50)
    assert caught.value.code == code


def test_clean_age_and_repeat_take_json_schema_integers_and_ignore_extra_keys() -> None:
    assert clean_age({"older_than_s": 60.0, "x": 1}, None, default=1) == 60
    assert repeat_fields({"cron": "* * * * *", "note": "x"}) == ("* * * * *", "UTC")
    with pytest.raises(ApiError) as caught:
        repeat_fields({"timezone": 0, "cron": 5})  # cron is checked first
    assert caught.value.code == "invalid_cron"
