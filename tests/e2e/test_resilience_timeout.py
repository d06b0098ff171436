"""A client that timed out (closed its connection before reading the answer) and then retried never creates
a duplicate: creating POSTs carry an Idempotency-Key and get the first answer replayed, a form save is a PUT
of the same values and changes nothing the second time.

The concurrency file covers simultaneous retries; this is the other half: the first request ran to its
commit with nobody listening, then the retry arrives. Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.e2e.live_server import LiveServer
from tests.e2e.resilience_support import (
    BASE,
    ENGINES,
    audit_count,
    audit_verifies,
    check_allocations,
    enroll,
    no_tracebacks,
    pain_values,
    send_and_hang_up,
    stored_form,
)
from tests.support import eligible_answers


@pytest.fixture(scope="module", params=ENGINES)
def live(request) -> Iterator[LiveServer]:
    with LiveServer(workers=2, threads=2) as server:
        yield server


def scalar(live: LiveServer, sql: str, **params) -> int:
    with live.engine() as engine, engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def wait_until(cond, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def hang_up(live: LiveServer, method: str, path: str, body: dict, token: str, key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Idempotency-Key"] = key
    send_and_hang_up(live.port, method, path, json.dumps(body).encode(), headers)


def test_randomize_retried_after_the_client_timed_out(live):
    code, racing = enroll(live, 2)
    token = live.tokens["investigator"]
    path = f"{BASE}/participants/{code}/randomize"
    key = f"timeout-{uuid.uuid4()}"
    hang_up(live, "POST", path, {}, token, key)
    # The server finishes the request with nobody listening: the allocation and the stored answer are committed.
    wait_until(lambda: scalar(live, "SELECT count(*) FROM idempotency_record WHERE key = :k", k=key) == 1,
               "the abandoned randomization to commit")
    with live.client() as api:
        retry = api.post(path, token=token, headers={"Idempotency-Key": key})
        assert retry.status == 201, retry.body
        assert retry.header("Idempotent-Replayed") == "true"
        arm = retry.json()["arm"]["code"]

        # The retry that races the abandoned request (sent at once, no waiting) is no different.
        key2 = f"timeout-{uuid.uuid4()}"
        path2 = f"{BASE}/participants/{racing}/randomize"
        hang_up(live, "POST", path2, {}, token, key2)
        raced = api.post(path2, token=token, headers={"Idempotency-Key": key2})
        assert raced.status == 201, raced.body
        again = api.post(path2, token=token, headers={"Idempotency-Key": key2})
        assert again.body == raced.body and again.header("Idempotent-Replayed") == "true"

    check_allocations(live, {code: arm, racing: raced.json()["arm"]["code"]})
    for c in (code, racing):
        assert audit_count(live, "participant = :c AND action = 'allocation:create'", {"c": c}) == 1
    assert scalar(live, "SELECT count(*) FROM idempotency_record WHERE key IN (:a, :b)", a=key, b=key2) == 2


def test_screening_retried_after_the_client_timed_out(live):
    token = live.tokens["PA"]
    body = {"answers": eligible_answers(sex="M"), "site": "PA"}
    key = f"timeout-{uuid.uuid4()}"
    before = scalar(live, "SELECT count(*) FROM screening")
    hang_up(live, "POST", f"{BASE}/screenings", body, token, key)
    wait_until(lambda: scalar(live, "SELECT count(*) FROM screening") == before + 1,
               "the abandoned screening to commit")
    with live.client() as api:
        retry = api.post(f"{BASE}/screenings", body, token=token, headers={"Idempotency-Key": key})
    assert retry.status == 201 and retry.header("Idempotent-Replayed") == "true", retry.body
    assert scalar(live, "SELECT count(*) FROM screening") == before + 1
    assert retry.json()["id"] == scalar(live, "SELECT max(id) FROM screening")


def test_form_save_retried_after_the_client_timed_out(live):
    (code,) = enroll(live, 1)
    token = live.tokens[code[:2]]
    path = f"{BASE}/participants/{code}/visits/BL/forms/pain"
    body = {"values": pain_values(7)}
    hang_up(live, "PUT", path, body, token)
    wait_until(lambda: stored_form(live, code)[0] == 1, "the abandoned form save to commit")
    with live.client() as api:
        retry = api.request("PUT", path, body, token=token)
    assert retry.status == 200, retry.body
    assert retry.json()["changed"] == [] and retry.json()["version"] == 1
    assert stored_form(live, code) == (1, {k: str(v) for k, v in pain_values(7).items()})
    assert audit_count(live, "participant = :c AND action = 'form:create'", {"c": code}) == 3
    assert audit_count(live, "participant = :c AND action = 'form:update'", {"c": code}) == 0


def test_the_audit_trail_verifies_after_abandoned_requests(live):
    audit_verifies(live)
    no_tracebacks(live)
