"""E-mail notifications through a real SMTP server on loopback (aiosmtpd): queued with the change, sent after
the commit, retried when the server is down, never undoing or blocking the change that caused them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import socket
import threading
from email import message_from_string

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select, update

from trialmgr import outbox
from trialmgr.db.base import utcnow
from trialmgr.db.models_accounts import User
from trialmgr.db.models_crf import VisitRecord
from trialmgr.db.models_notify import Notification
from trialmgr.db.models_trial import Participant
from trialmgr.services import crf, enrollment, notify, randomization
from trialmgr.services.context import cli_actor

T = "hip-pt-clbp"
TODAY = enrollment.today()
SAE = {"term": "Fall with hip fracture", "onset_date": TODAY.isoformat(), "severity": "severe", "serious": "yes",
       "serious_criteria": "hospitalization", "relatedness": "unlikely", "action_taken": "interrupted",
       "outcome": "recovering"}


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], object]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802  (aiosmtpd's hook name)
        self.messages.append((list(envelope.rcpt_tos), message_from_string(envelope.content.decode())))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MailServer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.inbox = Inbox()
        self.controller: Controller | None = None

    def start(self) -> Inbox:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self.inbox

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def mail():
    server = MailServer(free_port())
    yield server
    server.stop()


@pytest.fixture
def settings(settings, mail):
    return dataclasses.replace(settings, smtp_host="127.0.0.1", smtp_port=mail.port, mail_from="trial@example.org")


@pytest.fixture
def investigators(make_user, db, trial):
    make_user("ivan", f"{T}:investigator", full_name="Ivan Petrov")
    make_user("inez", f"{T}:investigator")
    make_user("nomail", f"{T}:investigator")
    make_user("cora", f"{T}:coordinator@DE")
    with db.session() as s:
        for name in ("ivan", "inez", "cora"):
            s.execute(update(User).where(User.username == name).values(email=f"{name}@example.org"))
    return ["inez@example.org", "ivan@example.org"]


@pytest.fixture
def api(client, db, investigators):
    from trialmgr.services import accounts

    with db.session() as s:
        user = accounts.get_user(s, "cora")
        _, token = accounts.create_token(s, cli_actor(), user, trial_id=T, role="coordinator", name="t")

    def call(method, path, json=None):
        return client.open(f"/api/v1/trials/{T}{path}", method=method, json=json,
                           headers={"Authorization": f"Bearer {token}"})

    return call


def rows(db) -> list[Notification]:
    with db.session(write=False) as s:
        return list(s.scalars(select(Notification).order_by(Notification.id)))


def test_serious_adverse_event_mail_arrives(api, mail, randomized, db):
    inbox = mail.start()
    code = randomized()
    resp = api("POST", f"/participants/{code}/forms/adverse_event", {"values": SAE})
    assert resp.status_code == 201, resp.get_json()
    assert len(inbox.messages) == 1  # sent after the commit, at the end of that request
    to, msg = inbox.messages[0]
    assert sorted(to) == ["inez@example.org", "ivan@example.org"]  # investigators with an address only
    assert msg["From"] == "trial@example.org" and code in msg["Subject"] and "\n" not in msg["Subject"]
    body = msg.get_payload()
    assert "Fall with hip fracture" in body and "Inpatient hospitalization or prolongation" in body
    assert "HIP" not in body and "SPINE" not in body  # never the arm
    [row] = rows(db)
    assert (row.status, row.attempts, row.kind) == ("sent", 1, "serious_adverse_event")
    # Saving the same event again (a correction) does not mail again; a non-serious event never does.
    again = api("PUT", f"/participants/{code}/forms/adverse_event/1",
                {"values": {**SAE, "outcome": "recovered"}, "reason": "resolved"})
    assert again.status_code == 200, again.get_json()
    api("POST", f"/participants/{code}/forms/adverse_event", {"values": {**SAE, "serious": "no",
                                                                         "serious_criteria": None}})
    assert len(inbox.messages) == 1 and len(rows(db)) == 1


def test_server_down_the_save_succeeds_and_the_mail_follows_later(api, mail, randomized, db, settings):
    code = randomized()
    resp = api("POST", f"/participants/{code}/forms/adverse_event", {"values": SAE})
    assert resp.status_code == 201  # the mail server is down: the SAE is saved all the same
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(Participant)) == 1
    [row] = rows(db)
    assert (row.status, row.attempts) == ("pending", 1) and "Connection" in row.last_error
    assert row.next_attempt_at > utcnow() + dt.timedelta(seconds=20)  # backoff, not a tight loop
    assert outbox.deliver_pending(db, settings) == {"sent": 0, "retry": 0, "failed": 0, "skipped": 0}  # not due
    inbox = mail.start()
    counts = outbox.deliver_pending(db, settings, now=utcnow() + dt.timedelta(seconds=31))
    assert counts["sent"] == 1 and len(inbox.messages) == 1 and code in inbox.messages[0][1]["Subject"]
    [row] = rows(db)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)


def test_retries_are_bounded(db, actor, investigators, randomized, settings):
    code = randomized()
    with db.session() as s:
        p = s.scalar(select(Participant).where(Participant.code == code))
        crf.save_form(s, actor, p, "adverse_event", SAE)
    now = utcnow()
    for _ in range(outbox.MAX_ATTEMPTS):
        outbox.deliver_pending(db, settings, now=now)
        now += dt.timedelta(hours=1)
    [row] = rows(db)
    assert (row.status, row.attempts) == ("failed", outbox.MAX_ATTEMPTS)
    assert outbox.deliver_pending(db, settings, now=now + dt.timedelta(days=1))["sent"] == 0


def test_a_rolled_back_change_queues_nothing(db, actor, investigators, randomized):
    code = randomized()
    with pytest.raises(RuntimeError), db.session() as s:
        p = s.scalar(select(Participant).where(Participant.code == code))
        crf.save_form(s, actor, p, "adverse_event", SAE)
        assert s.scalar(select(func.count()).select_from(Notification)) == 1
        raise RuntimeError("the change fails after the hook ran")
    assert rows(db) == []


def test_list_running_low_and_exhausted(db, actor, settings, investigators, enroll, mail):
    csv = "stratum,sequence,arm,block\n" + "".join(
        f"{s},{i},{arm},1\n" for s in ["DE|F", "DE|M", "PA|F", "PA|M", "NC|F", "NC|M"]
        for i, arm in enumerate(["HIP", "SPINE"], 1))
    with db.session() as s:
        randomization.import_list(s, actor, settings, T, csv)
    first, second = enroll("DE", "F"), enroll("DE", "F")
    for code in (first, second):
        with db.session() as s:
            randomization.randomize(s, actor, settings, T, code)
    assert [(r.kind, r.status) for r in rows(db)] == [("list_low", "pending"), ("list_exhausted", "pending")]
    inbox = mail.start()
    assert outbox.deliver_pending(db, settings)["sent"] == 2
    subjects = [m["Subject"] for _, m in inbox.messages]
    assert any("running low in stratum DE|F" in x for x in subjects)
    assert any("exhausted in stratum DE|F" in x for x in subjects)


def test_overdue_primary_visit_from_the_cron_command(runner, db, investigators, randomized, mail):
    inbox = mail.start()
    code = randomized()
    past = TODAY - dt.timedelta(days=30)
    with db.session() as s:
        pid = s.scalar(select(Participant.id).where(Participant.code == code))
        s.execute(update(VisitRecord).where(VisitRecord.participant_id == pid, VisitRecord.code == "W12").values(
            target_date=past, window_start=past - dt.timedelta(days=7), window_end=past + dt.timedelta(days=14)))
    result = runner.invoke(["notify", "overdue"])
    assert result.exit_code == 0, result.output
    assert f"{T}: 1 overdue primary-endpoint visit(s) newly reported" in result.output and "sent 1" in result.output
    assert len(inbox.messages) == 1 and f"{code} W12" in inbox.messages[0][1]["Subject"]
    again = runner.invoke(["notify", "overdue"])
    assert f"{T}: 0 overdue" in again.output and len(inbox.messages) == 1


def test_no_smtp_host_means_no_mail(db, actor, investigators, randomized, settings):
    off = dataclasses.replace(settings, smtp_host="")
    code = randomized()
    with db.session() as s:
        crf.save_form(s, actor, s.scalar(select(Participant).where(Participant.code == code)), "adverse_event", SAE)
    assert outbox.deliver_pending(db, off) == {"sent": 0, "retry": 0, "failed": 0, "skipped": 1}
    assert rows(db)[0].status == "skipped"


def test_no_investigator_with_an_address(db, actor, trial, randomized):
    code = randomized()
    with db.session() as s:
        crf.save_form(s, actor, s.scalar(select(Participant).where(Participant.code == code)), "adverse_event", SAE)
        assert notify.recipients(s, T) == []
    [row] = rows(db)
    assert row.status == "skipped" and "no active investigator" in row.last_error


def test_the_dispatcher_thread_wakes_on_a_kick(app, monkeypatch):
    called = threading.Event()
    monkeypatch.setattr(outbox, "deliver_pending", lambda db, settings: called.set() or {})
    monkeypatch.setattr(outbox, "next_due", lambda db: None)
    disp = outbox.Dispatcher(app, inline=False)
    disp.kick()
    assert called.wait(5)
    called.clear()
    disp.kick()  # the same thread, woken again
    assert called.wait(5) and disp._thread is not None and disp._thread.daemon
