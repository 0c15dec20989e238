"""Sentinel clients whose list of sentinels survives concurrent master discoveries.

redis-py's ``discover_master`` moves the sentinel that answered to the front of
``self.sentinels`` by swapping two positions it read before asking (an ``await`` in the
asyncio client, another thread in the sync one). Two discoveries that overlap, as every
pooled connection of an API replica does after a failover, swap stale positions: the list
then holds one sentinel twice and has lost another. Seen in the broker failover benchmark:
an API replica kept asking only the sentinel of an isolated host, and failed every status
read for minutes while the other replica answered.

Invariant: a discovery reorders the sentinels only by building a new list from the current
one in one step (no ``await`` or other thread in between), so the set of sentinels a client
was given never changes; the one that answered goes first, as upstream intends.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.exceptions import ConnectionError, TimeoutError
from redis.sentinel import MasterNotFoundError, Sentinel

_S = TypeVar("_S")


def _answered_first(sentinels: list[_S], answered: _S) -> list[_S]:
    return [answered, *(s for s in sentinels if s is not answered)]


def _master_address(manager: Any, state: dict[str, Any]) -> tuple[str, int]:
    forced = manager._force_master_ip
    return (forced if forced is not None else state["ip"]), state["port"]


def _not_found(service_name: str, errors: list[str]) -> MasterNotFoundError:
    detail = f" : {', '.join(errors)}" if errors else ""
    return MasterNotFoundError(f"No master found for {service_name!r}{detail}")


class SafeSentinel(Sentinel):
    """redis-py's sync :class:`~redis.sentinel.Sentinel` with the invariant above."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        errors: list[str] = []
        for sentinel in list(self.sentinels):
            try:
                masters = cast(dict[str, Any], sentinel.sentinel_masters())
            except (ConnectionError, TimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                self.sentinels = _answered_first(self.sentinels, sentinel)
                return _master_address(self, state)
        raise _not_found(service_name, errors)


class SafeAsyncSentinel(AsyncSentinel):
    """redis-py's asyncio :class:`~redis.asyncio.sentinel.Sentinel` with the invariant above."""

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        errors: list[str] = []
        for sentinel in list(self.sentinels):
            try:
                masters = cast(dict[str, Any], await sentinel.sentinel_masters())
            except (ConnectionError, TimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                self.sentinels = _answered_first(self.sentinels, sentinel)
                return _master_address(self, state)
        raise _not_found(service_name, errors)


def with_safe_discovery(manager: Sentinel) -> Sentinel:
    """``manager``, built by a library (kombu, Celery), now discovering as :class:`SafeSentinel`."""
    manager.__class__ = SafeSentinel
    return manager
