"""The private kombu names taskq/broker/redis_transport.py overrides or reads still exist.

A kombu upgrade that renames one of them would silently bring back the loss window (our
override would no longer be called) or break consuming: this fails first.
"""

from __future__ import annotations

import inspect

import pytest
from kombu.transport import redis as kombu_redis

from taskq.broker import redis_transport


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (owner, name)
        for owner, names in redis_transport.KOMBU_PRIVATE_NAMES.items()
        for name in names
    ],
)
def test_private_name_exists(owner: str, name: str) -> None:
    cls = getattr(kombu_redis, owner)
    if name in ("_delivered", "_dirty"):  # instance attributes, declared on the base class
        assert name in {n for klass in cls.__mro__ for n in vars(klass)}, name
        return
    # Either a class attribute/method, or an instance attribute set in __init__.
    assert hasattr(cls, name) or f"self.{name} =" in inspect.getsource(cls.__init__), name


def test_overridden_methods_keep_their_signatures() -> None:
    ours, theirs = redis_transport.Channel, kombu_redis.Channel
    for name in ("_brpop_start", "_brpop_read", "_connparams", "_do_restore_message", "_put"):
        assert list(inspect.signature(getattr(ours, name)).parameters) == list(
            inspect.signature(getattr(theirs, name)).parameters
        ), name


def test_the_poller_calls_the_overridden_pair() -> None:
    # MultiChannelPoller sends with _brpop_start and reads through handlers["BRPOP"].
    source = inspect.getsource(kombu_redis.MultiChannelPoller._register_BRPOP)
    assert "_brpop_start" in source
    assert "'BRPOP': self._brpop_read" in inspect.getsource(kombu_redis.Channel.__init__)


def test_consume_order_is_brpops() -> None:
    # POP_AND_HOLD takes the keys in the order _brpop_start of kombu builds them.
    source = inspect.getsource(kombu_redis.Channel._brpop_start)
    assert "for pri in self.priority_steps" in source and "for queue in queues" in source


def test_overridden_qos_methods_accept_what_kombu_passes() -> None:
    ours, theirs = redis_transport.QoS, kombu_redis.QoS
    for name in ("append", "ack", "reject", "restore_unacked", "restore_visible", "restore_by_tag"):
        expected = list(inspect.signature(getattr(theirs, name)).parameters)
        actual = list(inspect.signature(getattr(ours, name)).parameters)
        assert actual[: len(expected)] == expected, name
