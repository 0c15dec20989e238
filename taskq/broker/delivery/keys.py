"""Redis key names of the delivery contract (see :mod:`taskq.broker.delivery`)."""

from __future__ import annotations

#: Hash: delivery tag -> holder id, beside kombu's ``unacked`` record of the same tag.
HOLDERS = "taskq:unacked_holders"
#: Prefix of a holder's lease key (a string with a TTL in Redis's clock).
LEASE_PREFIX = "taskq:lease:"
#: Hash: ``last`` (ms, Redis clock) of the last renewal, ``grace_until`` (ms) after a stall.
CLOCK = "taskq:lease_clock"
#: Prefix of an attempt's run lease (value ``holder|delivery tag``).
RUN_PREFIX = "taskq:run:"
#: Prefix of a task's revocation (set only while it had not started; checked at start).
REVOKED_PREFIX = "taskq:revoked:"
#: Prefix of an attempt's delivery counter (the poison cap).
DELIVERIES_PREFIX = "taskq:deliveries:"


def lease_key(holder: str) -> str:
    """The lease key of ``holder``."""
    return LEASE_PREFIX + holder


def run_key(task_id: str, retries: int) -> str:
    """The run lease of one attempt (retries are new attempts of the same task id)."""
    return f"{RUN_PREFIX}{task_id}:{retries}"


def deliveries_key(task_id: str, retries: int) -> str:
    """The delivery counter of one attempt."""
    return f"{DELIVERIES_PREFIX}{task_id}:{retries}"


def revoked_key(task_id: str) -> str:
    """The revocation of a task."""
    return REVOKED_PREFIX + task_id
