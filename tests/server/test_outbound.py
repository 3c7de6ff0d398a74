"""Limits on tasks that reach outside, as far as they are pure: attempts and recipients."""

from __future__ import annotations

import pytest

from server.errors import ApiError
from server.outbound import payload_errors
from server.validation import attempts_for


def test_a_types_attempt_limit_is_a_ceiling_callers_cannot_raise() -> None:
    assert attempts_for(None, "webhook.deliver", 5, default=4) == 5
    assert attempts_for(2, "webhook.deliver", 5, default=4) == 2
    assert attempts_for(5, "webhook.deliver", 5, default=4) == 5
    with pytest.raises(ApiError) as refused:
        attempts_for(20, "webhook.deliver", 5, default=4)
    assert (refused.value.status, refused.value.code) == (400, "invalid_max_attempts")
    assert "at most 5" in refused.value.message


def test_a_type_without_a_limit_takes_the_callers_or_the_deployments() -> None:
    assert attempts_for(None, "image.reprocess", None, default=4) == 4
    assert attempts_for(20, "image.reprocess", None, default=4) == 20


def test_an_email_goes_to_exactly_one_address() -> None:
    assert payload_errors("email.send", {"to": "victim@ex.com,postmaster"}) == {
        "payload.to": "must be exactly one address (no list, no name)"}
    assert payload_errors("email.send", {"to": "ana@example.com"}) == {}
    assert payload_errors("webhook.deliver", {"url": "https://x.example"}) == {}
