"""Idempotency-Key parsing, fingerprints and the decision table (the Redis side runs in
tests/integration/test_idempotency_stack.py)."""

from __future__ import annotations

import pytest

from api import idempotency
from api.idempotency import (
    InFlight,
    MalformedKey,
    Mismatch,
    Record,
    Replay,
    StoredResponse,
    client_identity,
    decide,
    fingerprint,
    parse_key,
    redis_key,
)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (None, None),
        ("abc-123", "abc-123"),
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("  spaced  ", "spaced"),
        ("a" * 255, "a" * 255),
        ("b64url_+/=~.:", "b64url_+/=~.:"),
    ],
)
def test_valid_keys_are_parsed(raw: str | None, key: str | None) -> None:
    assert parse_key(raw) == key


@pytest.mark.parametrize("raw", ["", "   ", '""', "a" * 256, "has space", "naïve", "semi;colon"])
def test_malformed_keys_are_refused(raw: str) -> None:
    with pytest.raises(MalformedKey):
        parse_key(raw)


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    identity = client_identity(None)
    one = fingerprint(identity, {"task_type": "x", "data": {"a": 1, "b": 2}})
    same = fingerprint(identity, {"data": {"b": 2, "a": 1}, "task_type": "x"})
    other = fingerprint(identity, {"task_type": "x", "data": {"a": 1, "b": 3}})
    assert one == same != other


def test_fingerprint_and_scope_depend_on_the_client_identity() -> None:
    body = {"task_type": "x"}
    alice, bob = client_identity("alice-key"), client_identity("bob-key")
    assert alice != bob and "alice-key" not in alice
    assert fingerprint(alice, body) != fingerprint(bob, body)
    assert redis_key(alice, "k") != redis_key(bob, "k")
    assert redis_key(alice, "k").startswith(idempotency.KEY_PREFIX)


def test_records_round_trip() -> None:
    record = Record(
        "done", "fp", "owner", StoredResponse(202, {"task_id": "t"}, {"Location": "/x"})
    )
    assert Record.decode(record.encode()) == record
    in_flight = Record("in_flight", "fp", "owner")
    assert Record.decode(in_flight.encode()) == in_flight


def test_same_fingerprint_and_done_replays_the_original_response() -> None:
    stored = StoredResponse(202, {"task_id": "t"})
    assert decide(Record("done", "fp", "o", stored), "fp") == Replay(stored)


def test_different_fingerprint_is_a_mismatch_whatever_the_state() -> None:
    assert decide(Record("done", "fp", "o", StoredResponse(202, {})), "other") == Mismatch()
    assert decide(Record("in_flight", "fp", "o"), "other") == Mismatch()


def test_same_fingerprint_in_flight_is_in_flight() -> None:
    assert decide(Record("in_flight", "fp", "o"), "fp") == InFlight()
