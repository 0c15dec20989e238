"""Tenants on the real stack: with API keys on, a task, its trace lines and every search
answer belong to the key that submitted them; another key gets 404; an admin key sees all.
Trace answers are paged (lines and bytes) and run on their own bounded capacity.

The truth is what each client saw (its own 202s and task ids) and the log files as written,
never the code under test's bookkeeping.
"""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import httpx
import pytest

from taskq.logs.schema import Event
from taskq.search.store.config import INDEX_FILE_NAME
from tests.integration.conftest import stack_settings, start_stack, stop_stack
from tests.integration.stack_client import Line, RunningStack, run_taskq

SECRETS = {"alice": f"sa-{uuid.uuid4().hex}", "bob": f"sb-{uuid.uuid4().hex}"}
ADMIN_SECRET = f"so-{uuid.uuid4().hex}"
MAX_LINES = 40
SLOTS = 2
TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    keys = ",".join(f"{name}:{secret}" for name, secret in SECRETS.items())
    settings = stack_settings(
        tmp_path_factory.mktemp("tenants"),
        api_keys=f"{keys},ops:{ADMIN_SECRET}",
        api_admin_keys="ops",
        trace_max_lines=MAX_LINES,
        search_slots=SLOTS,
    )
    running = start_stack(settings)
    try:
        yield running
    finally:
        stop_stack(running)


def client(stack: RunningStack, secret: str, base_url: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=base_url or stack.layout.base_url,
        headers={"X-API-Key": secret},
        timeout=60.0,
    )


def submit(
    http: httpx.Client, cid: str, content_type: str = "application/json", payload: str = "x"
) -> str:
    body = b'{"task_type": "drill_echo", "data": {"payload": "%s"}}' % payload.encode()
    answer = http.post(
        "/api/v1/tasks",
        content=body,
        headers={"Content-Type": content_type, "X-Request-ID": cid},
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


def finished(http: httpx.Client, task_id: str) -> dict[str, Any]:
    for _ in range(300):
        status = http.get(f"/api/v1/tasks/{task_id}").json()
        if status.get("status") in TERMINAL:
            return dict(status)
        http.get("/readyz")  # paces the poll on a real round trip, no sleep
    raise AssertionError(f"task {task_id} did not finish: {status}")


def wait_logged(stack: RunningStack, task_ids: set[str]) -> None:
    """Until every task's end is in the files the search reads."""

    def ended(line: Line) -> bool:
        return line.get("task_id") in task_ids and line.get("event.action") == Event.TASK_SUCCEEDED

    stack.wait_for_lines(ended, lambda found: {x["task_id"] for x in found} == task_ids)


def test_a_task_belongs_to_the_key_that_submitted_it(tenants: RunningStack) -> None:
    with (
        client(tenants, SECRETS["alice"]) as alice,
        client(tenants, SECRETS["bob"]) as bob,
        client(tenants, ADMIN_SECRET) as ops,
    ):
        # The fast lane (application/json) and FastAPI's route (+json) alike.
        for content_type in ("application/json", "application/vnd.taskq+json"):
            task_id = submit(alice, f"own-{uuid.uuid4().hex[:8]}", content_type)
            assert finished(alice, task_id)["status"] == "SUCCESS"
            for answer in (
                bob.get(f"/api/v1/tasks/{task_id}"),
                bob.delete(f"/api/v1/tasks/{task_id}"),
            ):
                assert answer.status_code == 404
                assert answer.json()["error"]["code"] == "task_not_found"
            unknown = bob.get(f"/api/v1/tasks/{uuid.uuid4()}")
            assert unknown.status_code == 404 and unknown.json() == {
                **unknown.json(),
                "error": {**unknown.json()["error"], "code": "task_not_found"},
            }
            assert ops.get(f"/api/v1/tasks/{task_id}").json()["status"] == "SUCCESS"
            assert alice.get(f"/api/v1/tasks/{task_id}").json()["status"] == "SUCCESS"
    # The key id is logged, the key never.
    published = tenants.lines(
        lambda x: x.get("event.action") == Event.TASK_PUBLISHED and x.get("user.id") == "alice"
    )
    assert len(published) >= 2
    for path in tenants.log_files():
        text = path.read_text(errors="replace")
        assert all(secret not in text for secret in (*SECRETS.values(), ADMIN_SECRET)), path


def test_traces_and_searches_show_the_callers_own_only(tenants: RunningStack) -> None:
    shared = f"shared-{uuid.uuid4().hex[:8]}"
    private = f"private-{uuid.uuid4().hex[:8]}"
    with (
        client(tenants, SECRETS["alice"]) as alice,
        client(tenants, SECRETS["bob"]) as bob,
        client(tenants, ADMIN_SECRET) as ops,
    ):
        mine = {submit(alice, shared), submit(alice, private)}
        # Bob reuses Alice's correlation id: a task of his own and a poll of hers.
        theirs = {submit(bob, shared)}
        bob.get(f"/api/v1/tasks/{next(iter(mine))}", headers={"X-Request-ID": shared})
        for http, ids in ((alice, mine), (bob, theirs)):
            for task_id in ids:
                assert finished(http, task_id)["status"] == "SUCCESS"
        wait_logged(tenants, mine | theirs)

        def trace(http: httpx.Client, cid: str) -> httpx.Response:
            return http.get(f"/api/v1/traces/{cid}")

        for http, own, other, name in ((alice, mine, theirs, "alice"), (bob, theirs, mine, "bob")):
            body = trace(http, shared).json()
            # Tasks known from their own lines (a poll of another's id names only that id).
            tasks = {t["task_id"] for t in body["tasks"] if t["task_name"]}
            assert tasks and tasks <= own, body["tasks"]
            ran = {x.get("task_id") for x in body["lines"] if x.get("service.name") == "worker"}
            assert ran and ran <= own
            assert {x["user.id"] for x in body["lines"] if "user.id" in x} == {name}
            assert all(x.get("user.id") == name for x in body["lines"] if x.get("task_id") in other)
        everyone = {t["task_id"] for t in trace(ops, shared).json()["tasks"] if t["task_name"]}
        assert theirs < everyone and everyone & mine
        hidden = trace(bob, private)
        assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "trace_not_found"
        assert trace(alice, private).status_code == 200

        # The explorer: searches by prefix and status, the trace and task pages.
        def fragment(http: httpx.Client, path: str) -> httpx.Response:
            return http.get(f"/ui/fragments{path}")

        assert private in fragment(alice, "/?q=private-*").text
        assert private not in fragment(bob, "/?q=private-*").text
        assert private in fragment(ops, "/?q=private-*").text
        slowest_bob = fragment(bob, "/?status=slowest").text
        slowest_alice = fragment(alice, "/?status=slowest").text
        assert not any(t in slowest_bob for t in mine)
        assert not any(t in slowest_alice for t in theirs)
        assert any(t in slowest_alice for t in mine)
        assert fragment(bob, f"/traces/{private}").status_code == 404
        for task_id in mine:
            assert fragment(bob, f"/tasks/{task_id}").status_code == 404
            assert fragment(alice, f"/tasks/{task_id}").status_code == 200


def test_an_inflated_trace_is_answered_in_pages(tenants: RunningStack) -> None:
    cid = f"inflated-{uuid.uuid4().hex[:8]}"
    with client(tenants, SECRETS["alice"]) as alice:
        task_id = submit(alice, cid)
        finished(alice, task_id)
        polls = 3 * MAX_LINES
        for _ in range(polls):
            assert alice.get(f"/api/v1/tasks/{task_id}", headers={"X-Request-ID": cid}).is_success
        wait_logged(tenants, {task_id})

        def own_http(line: Line) -> bool:
            return (
                line.get("correlation_id") == cid
                and line.get("event.action") == Event.HTTP_COMPLETED
            )

        # nginx's and the API's line of every poll, with what the submission wrote.
        tenants.wait_for_lines(own_http, lambda found: len(found) >= 2 * (polls + 1))
        pages, offset = [], 0
        while offset is not None:
            answer = alice.get(f"/api/v1/traces/{cid}", params={"offset": offset})
            assert answer.status_code == 200
            body = answer.json()
            assert len(body["lines"]) <= MAX_LINES and len(body["requests"]) <= MAX_LINES
            pages.append(body)
            offset = body["page"]["next_offset"]
        total = pages[0]["page"]["lines_total"]
        assert total > 2 * MAX_LINES and len(pages) >= 3
        assert all(p["page"]["truncated"] for p in pages)
        assert sum(len(p["lines"]) for p in pages) == total
        assert [p["page"]["offset"] for p in pages] == [
            sum(len(p["lines"]) for p in pages[:i]) for i in range(len(pages))
        ]
        html = alice.get(f"/ui/fragments/traces/{cid}").text
        assert 'id="lines-truncated"' in html and f'href="?offset={MAX_LINES}"' in html
    printed = run_taskq(tenants, "trace", cid, "--max-lines", "10")
    assert printed.returncode == 0, printed.stderr
    assert re.search(rf"TRUNCATED: lines 1-10 of {total}\b.*--offset 10", printed.stdout)


def test_trace_calls_never_hold_up_probes_polls_or_submissions(tenants: RunningStack) -> None:
    cid = f"held-{uuid.uuid4().hex[:8]}"
    replica = tenants.replica_url(1)
    with client(tenants, SECRETS["alice"], replica) as alice:
        task_id = submit(alice, cid)
        finished(alice, task_id)
        assert alice.get(f"/api/v1/traces/{cid}").status_code == 200  # the index exists
        index = sqlite3.connect(
            tenants.layout.run_dir / INDEX_FILE_NAME, isolation_level=None, timeout=30
        )
        extra = 3
        calls: list[Future[httpx.Response]] = []
        with ThreadPoolExecutor(SLOTS + extra) as pool:
            try:
                index.execute("BEGIN IMMEDIATE")  # every lookup now waits for the index
                alice.get("/api/v1/tasks/not-a-task")  # a new line: the lookups must refresh
                calls = [
                    pool.submit(alice.get, f"/api/v1/traces/{cid}") for _ in range(SLOTS + extra)
                ]
                # The calls beyond the slots are refused at once (they wait for nothing).
                done: set[Future[httpx.Response]] = set()
                while len(done) < extra:
                    finished_now, _ = wait(calls, return_when=FIRST_COMPLETED, timeout=60)
                    assert finished_now, "no trace call was answered"
                    done = set(finished_now)
                    if len(done) < extra:
                        wait(
                            [f for f in calls if f not in done],
                            return_when=FIRST_COMPLETED,
                            timeout=60,
                        )
                        done = {f for f in calls if f.done()}
                refused = [f.result() for f in done]
                assert [r.status_code for r in refused] == [503] * extra
                assert {r.json()["error"]["code"] for r in refused} == {"search_busy"}
                assert all("retry-after" in r.headers for r in refused)
                held = [f for f in calls if f not in done]
                assert len(held) == SLOTS
                # While every slot is held, probes, status polls and submissions are answered.
                answered = 0
                for _ in range(20):
                    assert alice.get("/readyz").status_code == 200
                    assert alice.get(f"/api/v1/tasks/{task_id}").status_code == 200
                    answered += 2
                assert answered == 40
                submitted = [submit(alice, f"{cid}-new") for _ in range(5)]
                assert len(set(submitted)) == 5
                assert not any(f.done() for f in held), "the held lookups must still be waiting"
            finally:
                index.execute("ROLLBACK")
                index.close()
            assert [f.result().status_code for f in held] == [200] * SLOTS
