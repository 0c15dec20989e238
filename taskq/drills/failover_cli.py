"""``taskq drill broker-failover``: start the stack as hosts, fail the broker over, report.

Needs root (network namespaces, iptables), redis-server, redis-sentinel and nginx. Exit
codes as every drill: 0 passed (0 lost, 0 duplicates, ...), 1 failed, 2 cannot run here,
3 inconclusive (no fault caught a held message).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

from taskq.drills.broker_failover import FailoverOptions, run_failovers, say
from taskq.drills.failover_report import build, write

REQUIRED = ("redis-server", "redis-sentinel", "nginx", "ip", "iptables")


def options_of(args: argparse.Namespace) -> FailoverOptions:
    mode = "alternate" if args.alternate else "partition" if args.partition else "kill"
    return FailoverOptions(
        failovers=args.kills or 1,
        mode=mode,
        rate_per_s=args.rate,
        seed=args.seed,
        quiet=args.quiet or args.json,
    )


def main(args: argparse.Namespace) -> int:
    """Run the drill as the command line says; its exit code."""
    import json
    import time

    from taskq.drills.cli import EXIT_CODES
    from taskq.hosts.netns import NamespacesUnavailable
    from taskq.hosts.stack_hosts import HostsStackError, hosts_stack
    from taskq.settings import get_settings

    missing = [tool for tool in REQUIRED if shutil.which(tool) is None]
    if missing:
        print(
            f"taskq drill broker-failover: missing {', '.join(missing)}: "
            "apt-get install -y redis-server redis-sentinel nginx iproute2 iptables",
            file=sys.stderr,
        )
        return 2
    options = options_of(args)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = (
        Path(args.out)
        if args.out
        else get_settings().var_dir / "drills" / f"{stamp}-broker-failover"
    )
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        with hosts_stack(out / "hosts") as stack:
            say(options, began, f"hosts up: {', '.join(sorted(stack.network.hosts))}")
            run = run_failovers(stack, options, out)
            data = build(run, options, out)
    except NamespacesUnavailable as exc:
        print(
            f"taskq drill broker-failover: network namespaces unavailable: {exc}", file=sys.stderr
        )
        return 2
    except HostsStackError as exc:
        print(f"taskq drill broker-failover: the hosts did not come up: {exc}", file=sys.stderr)
        return 2
    write(out, data)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print((out / "report.md").read_text().split("\n| # |")[0])
        print(f"report: {out / 'report.md'}")
    return EXIT_CODES[data["verdict"]]
