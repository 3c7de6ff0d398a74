from __future__ import annotations

import pytest

from server.errors import ApiError
from server.validation import MAX_DELAY_S, page, upload_options


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
    assert caught.value.status == 400


def test_page_bounds() -> None:
    assert page({}) == (50, None)
    assert page({"limit": "5", "before": "abc"}) == (5, "abc")
    for bad in ("0", "201", "x"):
        with pytest.raises(ApiError):
            page({"limit": bad})
