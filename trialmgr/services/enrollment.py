"""Screening, consent and enrollment: the steps before randomization, in the order 21 CFR 11.10(f) wants.

A screening is always kept (eligible or not, with every failed criterion) and feeds the CONSORT diagram.
Enrollment turns an eligible, consented screening into a participant with a gap-free site-prefixed ID.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trialmgr import clock
from trialmgr.db.models_accounts import Site
from trialmgr.db.models_trial import Participant, Screening, SiteCounter
from trialmgr.domain import crf
from trialmgr.domain.eligibility import EligibilityResult, evaluate
from trialmgr.domain.errors import Conflict, ConsentMissing, NotEligible, NotFound, ValidationFailed
from trialmgr.domain.vocab import ParticipantStatus, Role, ScreeningOutcome
from trialmgr.services import audit, trials, visits
from trialmgr.services.context import Actor

ENROLLERS = (Role.COORDINATOR, Role.INVESTIGATOR)
SCREENING_VALID_DAYS = 30  # SCR: up to 30 days before baseline
BACKDATE_DAYS = 365


def today() -> dt.date:
    return clock.today()


def _screening_chain(trial: str, screening_id: int) -> str:
    return f"{trial}/screening/{screening_id}"


@dataclass(frozen=True)
class ScreeningResult:
    screening: Screening
    result: EligibilityResult


def _check_site(session: Session, actor: Actor, trial_id: str, site_code: str | None) -> str:
    code = (site_code or "").strip().upper()
    if not code and len(actor.sites) == 1:
        code = actor.sites[0]
    if not code:
        raise ValidationFailed({"site": "is required"})
    site = session.scalar(select(Site).where(Site.trial_id == trial_id, Site.code == code))
    if site is None or not site.active:
        raise ValidationFailed({"site": f"unknown or closed site {code!r}"})
    if not actor.sees_site(code):
        raise ValidationFailed({"site": f"you do not work at site {code}"})
    return code


def _parse_date(name: str, raw, *, default: dt.date | None = None) -> dt.date:
    if raw in (None, "") and default is not None:
        return default
    if isinstance(raw, dt.date):
        return raw
    try:
        return dt.date.fromisoformat(str(raw).strip())
    except ValueError:
        raise ValidationFailed({name: "is not a valid date (YYYY-MM-DD)"}) from None


def screen(session: Session, actor: Actor, trial_id: str, answers: dict, *, site: str | None = None,
           screening_date=None) -> ScreeningResult:
    """Judge a candidate and log the screening. Bad or missing answers are refused whole, with each named."""
    actor.require(*ENROLLERS)
    trials.require_open(session, trial_id)
    proto = trials.current_protocol(session, trial_id)
    version = trials.current_version(session, trial_id)
    site_code = _check_site(session, actor, trial_id, site)
    when = _parse_date("screening_date", screening_date, default=today())
    if when > today():
        raise ValidationFailed({"screening_date": "must not be in the future"})
    if when < today() - dt.timedelta(days=BACKDATE_DAYS):
        raise ValidationFailed({"screening_date": f"must be within the last {BACKDATE_DAYS} days"})
    result = evaluate(proto, answers, when)
    if result.errors:
        raise ValidationFailed(result.errors)
    form = proto.screening_form
    stored = {f.id: crf.serialize_value(f, result.values[f.id]) for f in form.fields
              if result.values.get(f.id) is not None}
    failures = [{"criterion": f.criterion_id, "kind": f.kind, "text": f.text, "reason": f.reason}
                for f in result.failures]
    row = Screening(trial_id=trial_id, site_code=site_code, screening_date=when, screened_by=actor.username,
                    protocol_number=version.number, answers=json.dumps(stored, sort_keys=True),
                    eligible=result.eligible, failures=json.dumps(failures),
                    outcome=ScreeningOutcome.ELIGIBLE if result.eligible else ScreeningOutcome.INELIGIBLE)
    session.add(row)
    session.flush()
    chain = _screening_chain(trial_id, row.id)
    common = {"trial": trial_id, "chain": chain}
    audit.record(session, actor, "screening:create", "screening", row.id, field="site", new=site_code, **common)
    audit.record(session, actor, "screening:create", "screening", row.id, field="screening_date",
                 new=when.isoformat(), **common)
    for name, text in stored.items():
        audit.record(session, actor, "screening:create", "screening", row.id, field=name, new=text, **common)
    audit.record(session, actor, "screening:create", "screening", row.id, field="outcome",
                 new=row.outcome.value, reason="; ".join(f.message for f in result.failures) or None, **common)
    return ScreeningResult(row, result)


def get_screening(session: Session, actor: Actor, trial_id: str, screening_id: int, *,
                  lock: bool = False) -> Screening:
    stmt = select(Screening).where(Screening.trial_id == trial_id, Screening.id == screening_id)
    row = session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None or not actor.sees_site(row.site_code):
        raise NotFound(f"no screening {screening_id} at your sites")
    return row


def decline(session: Session, actor: Actor, trial_id: str, screening_id: int, reason: str) -> Screening:
    """An eligible candidate declined to take part (a CONSORT exclusion reason)."""
    actor.require(*ENROLLERS)
    trials.require_open(session, trial_id)
    row = get_screening(session, actor, trial_id, screening_id, lock=True)
    if row.outcome is not ScreeningOutcome.ELIGIBLE:
        raise Conflict(f"screening {screening_id} is {row.outcome.value}; only an eligible candidate can decline")
    if not (reason or "").strip():
        raise ValidationFailed({"reason": "is required (why the candidate declined)"})
    audit.record(session, actor, "screening:decline", "screening", row.id, trial=trial_id,
                 chain=_screening_chain(trial_id, row.id), field="outcome", old=row.outcome.value,
                 new=ScreeningOutcome.DECLINED.value, reason=reason.strip())
    row.outcome = ScreeningOutcome.DECLINED
    row.decline_reason = reason.strip()
    return row


def _next_number(session: Session, trial_id: str, site_code: str) -> int:
    """Take the site's next participant number under a row lock; a rollback gives it back (no gaps).

    The counter row is created on first use with INSERT ... ON CONFLICT DO NOTHING, so two first enrollments
    at a site cannot both try to create it; both then queue on its row lock.
    """
    from sqlalchemy.dialects import postgresql, sqlite

    table = SiteCounter.__table__
    conn = session.connection()
    ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
    conn.execute(ins.values(trial_id=trial_id, site_code=site_code, last_number=0)
                 .on_conflict_do_nothing(index_elements=["trial_id", "site_code"]))
    counter = session.scalar(select(SiteCounter).where(SiteCounter.trial_id == trial_id,
                                                       SiteCounter.site_code == site_code)
                             .with_for_update().execution_options(populate_existing=True))
    counter.last_number += 1
    return counter.last_number


def enroll(session: Session, actor: Actor, trial_id: str, screening_id: int, *, consent_date,
           consent_version: str | None) -> Participant:
    """Consent recorded and eligibility confirmed, the candidate becomes a participant (e.g. DE-0007)."""
    actor.require(*ENROLLERS)
    trials.require_open(session, trial_id)
    proto = trials.current_protocol(session, trial_id)
    row = get_screening(session, actor, trial_id, screening_id, lock=True)
    if row.outcome is ScreeningOutcome.ENROLLED:
        raise Conflict(f"screening {screening_id} is already enrolled")
    if row.outcome is ScreeningOutcome.DECLINED:
        raise Conflict(f"screening {screening_id}: the candidate declined to take part")
    if not row.eligible:
        failures = "; ".join(f"{f['text']}: {f['reason']}" for f in json.loads(row.failures))
        raise NotEligible(f"screening {screening_id} is not eligible: {failures}")
    if consent_date in (None, "") or not (consent_version or "").strip():
        missing = {}
        if consent_date in (None, ""):
            missing["consent_date"] = "is required: record the date informed consent was signed"
        if not (consent_version or "").strip():
            missing["consent_version"] = "is required: the version of the consent form signed"
        exc = ConsentMissing("informed consent must be recorded before enrollment: "
                             + "; ".join(f"{k} {v}" for k, v in missing.items()))
        exc.errors = missing  # {field: message}, so forms can show each next to its field
        raise exc
    signed = _parse_date("consent_date", consent_date)
    errors = {}
    if signed > today():
        errors["consent_date"] = "must not be in the future"
    elif signed < row.screening_date - dt.timedelta(days=SCREENING_VALID_DAYS):
        errors["consent_date"] = (f"is more than {SCREENING_VALID_DAYS} days before the screening "
                                  f"({row.screening_date.isoformat()})")
    if consent_version.strip() != proto.consent_version:
        errors["consent_version"] = (f"{consent_version.strip()!r} is not the current consent form version "
                                     f"({proto.consent_version})")
    if row.screening_date < today() - dt.timedelta(days=SCREENING_VALID_DAYS):
        errors["screening"] = (f"was done on {row.screening_date.isoformat()}, more than "
                               f"{SCREENING_VALID_DAYS} days ago: screen the candidate again")
    if errors:
        raise ValidationFailed(errors)
    answers = json.loads(row.answers)
    factors = {}
    for name, _levels in proto.strata_factors():
        factors[name] = row.site_code if name == "site" else answers.get(name)
    stratum = proto.stratum_key(factors)
    number = _next_number(session, trial_id, row.site_code)
    code = f"{row.site_code}-{number:04d}"
    participant = Participant(trial_id=trial_id, site_code=row.site_code, number=number, code=code,
                              screening_id=row.id, consent_date=signed, consent_version=consent_version.strip(),
                              strata=json.dumps(factors, sort_keys=True), stratum=stratum,
                              status=ParticipantStatus.ENROLLED, enrolled_by=actor.username)
    session.add(participant)
    session.flush()
    audit.record(session, actor, "screening:enroll", "screening", row.id, trial=trial_id,
                 chain=_screening_chain(trial_id, row.id), field="outcome", old=row.outcome.value,
                 new=ScreeningOutcome.ENROLLED.value)
    row.outcome = ScreeningOutcome.ENROLLED
    for name, value in (("code", code), ("site", row.site_code), ("screening", str(row.id)),
                        ("consent_date", signed.isoformat()), ("consent_version", participant.consent_version),
                        ("stratum", stratum), ("status", participant.status.value)):
        audit.record(session, actor, "participant:create", "participant", code, trial=trial_id, participant=code,
                     field=name, new=value)
    # Baseline can be entered from enrollment on; randomization re-anchors the schedule on its own date.
    visits.anchor_schedule(session, actor, proto, participant, today())
    return participant


def get_participant(session: Session, actor: Actor, trial_id: str, code: str, *, lock: bool = False) -> Participant:
    stmt = select(Participant).where(Participant.trial_id == trial_id, Participant.code == code)
    row = session.scalar(stmt.with_for_update() if lock else stmt)
    if row is None or not actor.sees_site(row.site_code):
        raise NotFound(f"no participant {code!r} at your sites")
    return row


def list_participants(session: Session, actor: Actor, trial_id: str, *, site: str | None = None,
                      status: str | None = None, limit: int | None = None, offset: int = 0) -> list[Participant]:
    """In site and number order; `limit`/`offset` give one page of it (the web list shows 100 at a time)."""
    stmt = _participants(actor, trial_id, site, status).order_by(Participant.site_code, Participant.number)
    if limit is not None:
        stmt = stmt.limit(limit).offset(offset)
    return list(session.scalars(stmt))


def count_participants(session: Session, actor: Actor, trial_id: str, *, site: str | None = None,
                       status: str | None = None) -> int:
    return session.scalar(_participants(actor, trial_id, site, status).with_only_columns(func.count())) or 0


def _participants(actor: Actor, trial_id: str, site: str | None, status: str | None):
    stmt = select(Participant).where(Participant.trial_id == trial_id)
    if site:
        stmt = stmt.where(Participant.site_code == site.upper())
    if status:
        try:
            stmt = stmt.where(Participant.status == ParticipantStatus(status))
        except ValueError:
            raise ValidationFailed({"status": f"unknown status {status!r}; one of "
                                    + ", ".join(s.value for s in ParticipantStatus)}) from None
    if actor.role is not None and actor.role.site_bound and not actor.console:
        stmt = stmt.where(Participant.site_code.in_(actor.sites))
    return stmt


def screening_counts(session: Session, trial_id: str) -> dict[str, int]:
    rows = session.execute(select(Screening.outcome, func.count()).where(Screening.trial_id == trial_id)
                           .group_by(Screening.outcome))
    return {outcome.value: n for outcome, n in rows}


# -- screening log (web pages) -------------------------------------------------------------------------------

def list_screenings(session: Session, actor: Actor, trial_id: str, *, site: str | None = None,
                    outcome: str | None = None, limit: int = 500) -> list[Screening]:
    """Newest first; site-bound roles see only their sites' screenings."""
    stmt = select(Screening).where(Screening.trial_id == trial_id)
    if site:
        stmt = stmt.where(Screening.site_code == site.strip().upper())
    if outcome:
        try:
            stmt = stmt.where(Screening.outcome == ScreeningOutcome(outcome))
        except ValueError:
            raise ValidationFailed({"outcome": f"unknown outcome {outcome!r}; one of "
                                    + ", ".join(o.value for o in ScreeningOutcome)}) from None
    if actor.role is not None and actor.role.site_bound and not actor.console:
        stmt = stmt.where(Screening.site_code.in_(actor.sites))
    return list(session.scalars(stmt.order_by(Screening.screening_date.desc(), Screening.id.desc()).limit(limit)))


def participant_for_screening(session: Session, screening_id: int) -> Participant | None:
    return session.scalar(select(Participant).where(Participant.screening_id == screening_id))
