"""Numbers for the role home pages and the trial reports: pure queries, no HTML, no writes.

CONSORT 2010 flow from live data (DOMAIN.md, "CONSORT flow diagram"). The rules, chosen to be simple and
checkable against the raw tables:

- Assessed for eligibility: every screening row (a candidate screened twice counts twice: no names are kept).
- Excluded: ineligible screenings, by failed criterion from ``Screening.failures`` (one screening failing two
  criteria is counted under both, so the criterion lines can add up to more than the total); declined
  (``ScreeningOutcome.DECLINED``); other reasons: eligible but never enrolled, and enrolled participants who
  left (withdrawal form) before they were randomized.
- Awaiting randomization: enrolled participants with status ``enrolled`` (an open trial has some).
  assessed == excluded + awaiting + randomized, always.
- Allocation, per arm: allocated = allocations. Did not receive the allocated intervention = a complete
  withdrawal form (any type, including "discontinued intervention") and no data at any scheduled visit after
  baseline (day > 0, W4 onwards); the reasons are the forms' types and reasons. Received = allocated - that.
- Follow-up, per arm: lost to follow-up = participant status ``lost_to_follow_up``; discontinued intervention
  = a complete withdrawal form of type ``discontinued_intervention``; withdrew = status ``withdrawn``
  (consent withdrawn). Reasons come from the withdrawal forms' "reason" text.
- Analysis, per arm (intention to treat): everyone allocated is analysed in the arm allocated, except those
  who withdrew consent (their data may not be used) and those found ineligible after randomization (a
  complete, major protocol deviation of category "eligibility"; CONSORT 2025 item 22b). Participants lost to
  follow-up stay in the analysis (missing outcomes are imputed, not dropped).

Blinded roles see the allocation, follow-up and analysis phases pooled over the arms, one column for everyone
randomized: no arm code or label, and no per-group numbers either. Neutral "Group 1" / "Group 2" columns would
still split the participants: a blinded monitor who sees a withdrawal, a loss or a randomization happen and
watches which group's count moves learns which participants share an arm, and knowing one participant's arm
then unblinds them all (ICH E6(R3) 4.1: protect the blind). Per-arm flow is for the unblinded.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trialmgr.db.models_crf import FormRecord, FormValue, VisitRecord
from trialmgr.db.models_trial import Allocation, Participant, Screening
from trialmgr.domain.protocol import Protocol, Visit
from trialmgr.domain.schedule import VisitStatus
from trialmgr.domain.vocab import ParticipantStatus, ScreeningOutcome
from trialmgr.services import trials, visits
from trialmgr.services.context import Actor

WITHDRAWAL_FORM = "withdrawal"
DEVIATION_FORM = "deviation"
AE_FORM = "adverse_event"
NO_REASON = "no reason recorded"
WITHDRAWAL_TYPES = {"withdrawal": "Withdrew consent", "lost_to_follow_up": "Lost to follow-up",
                    "discontinued_intervention": "Discontinued intervention"}


@dataclass(frozen=True)
class Reason:
    text: str
    n: int


def _reasons(texts: list[str]) -> list[Reason]:
    """Identical reasons merged, most frequent first, then alphabetically (stable for tests and print)."""
    return [Reason(t, n) for t, n in sorted(Counter(texts).items(), key=lambda kv: (-kv[1], kv[0]))]


@dataclass
class ArmFlow:
    key: str  # the arm code, or POOLED for blinded readers
    label: str
    allocated: int = 0
    received: int = 0
    not_received: int = 0
    not_received_reasons: list[Reason] = field(default_factory=list)
    lost: int = 0
    lost_reasons: list[Reason] = field(default_factory=list)
    discontinued: int = 0
    discontinued_reasons: list[Reason] = field(default_factory=list)
    withdrew: int = 0
    withdrew_reasons: list[Reason] = field(default_factory=list)
    analysed: int = 0
    excluded_from_analysis: int = 0
    excluded_reasons: list[Reason] = field(default_factory=list)


@dataclass
class Consort:
    trial: str
    blinded: bool
    assessed: int
    excluded: int
    not_meeting_criteria: int
    by_criterion: list[Reason]
    declined: int
    other: int
    other_reasons: list[Reason]
    awaiting_randomization: int
    randomized: int
    arms: list[ArmFlow]


def _form_values(session: Session, trial: str, form_id: str, *, complete_only: bool = True
                 ) -> dict[int, tuple[int, dict[str, str]]]:
    """record id -> (participant id, {field: value}) for one form of a trial."""
    stmt = (select(FormRecord.id, FormRecord.participant_id, FormValue.field_id, FormValue.value)
            .join(FormValue, FormValue.record_id == FormRecord.id, isouter=True)
            .where(FormRecord.trial_id == trial, FormRecord.form_id == form_id))
    if complete_only:
        stmt = stmt.where(FormRecord.status == "complete")
    out: dict[int, tuple[int, dict[str, str]]] = {}
    for rid, pid, fid, value in session.execute(stmt):
        entry = out.setdefault(rid, (pid, {}))
        if fid is not None and value is not None:
            entry[1][fid] = value
    return out


def _post_baseline_data(session: Session, trial: str, proto: Protocol) -> set[int]:
    """Participants with any form at a scheduled visit after baseline (day > 0)."""
    later = [v.code for v in proto.visits if v.day > 0]
    if not later:
        return set()
    return set(session.scalars(
        select(FormRecord.participant_id).join(VisitRecord, VisitRecord.id == FormRecord.visit_id)
        .where(FormRecord.trial_id == trial, VisitRecord.scheduled.is_(True), VisitRecord.code.in_(later))
        .distinct()))


POOLED = "pooled"
POOLED_LABEL = "All randomized (groups pooled)"


def consort(session: Session, trial: str, *, blinded: bool) -> Consort:
    """The CONSORT flow from the live data; `blinded`: the arms pooled into one column (see the module's doc)."""
    proto = trials.current_protocol(session, trial)
    outcomes = dict(session.execute(select(Screening.outcome, func.count()).where(Screening.trial_id == trial)
                                    .group_by(Screening.outcome)).all())
    assessed = sum(outcomes.values())
    criteria: list[str] = []
    for (failures,) in session.execute(select(Screening.failures).where(
            Screening.trial_id == trial, Screening.outcome == ScreeningOutcome.INELIGIBLE)):
        seen = set()
        for f in json.loads(failures or "[]"):
            text = f.get("text") or f.get("criterion") or "unspecified criterion"
            if text not in seen:  # one screening counts once per criterion
                seen.add(text)
                criteria.append(text)

    participants = session.execute(select(Participant.id, Participant.status, Allocation.arm)
                                   .join(Allocation, Allocation.participant_id == Participant.id, isouter=True)
                                   .where(Participant.trial_id == trial)).all()
    withdrawals: dict[int, list[dict[str, str]]] = defaultdict(list)
    for pid, values in _form_values(session, trial, WITHDRAWAL_FORM).values():
        withdrawals[pid].append(values)
    ineligible_after: set[int] = {pid for pid, v in _form_values(session, trial, DEVIATION_FORM).values()
                                  if v.get("category") == "eligibility" and v.get("major") == "yes"}
    later_data = _post_baseline_data(session, trial, proto)

    other_reasons = ["Eligible, not enrolled"] * outcomes.get(ScreeningOutcome.ELIGIBLE, 0)
    awaiting = 0
    pooled = ArmFlow(key=POOLED, label=POOLED_LABEL)
    arms = {a.code: pooled if blinded else ArmFlow(key=a.code, label=a.label) for a in proto.arms}

    def why(form: dict[str, str], *, with_type: bool) -> str:
        reason = (form.get("reason") or "").strip() or NO_REASON
        kind = WITHDRAWAL_TYPES.get(form.get("type", ""), "Ended participation")
        return f"{kind}: {reason}" if with_type else reason

    for pid, status, arm in participants:
        forms = withdrawals.get(pid, [])
        if arm is None:
            if status is ParticipantStatus.ENROLLED:
                awaiting += 1
            else:
                other_reasons.append("Left after enrollment, before randomization")
            continue
        flow = arms.get(arm)
        if flow is None:  # an arm no longer in the protocol: keep the numbers honest rather than drop them
            flow = arms.setdefault(arm, pooled if blinded else ArmFlow(key=arm, label=arm))
        flow.allocated += 1
        if forms and pid not in later_data:
            flow.not_received += 1
            flow.not_received_reasons.extend(why(f, with_type=True) for f in forms[:1])
        typed = defaultdict(list)
        for f in forms:
            typed[f.get("type", "")].append(why(f, with_type=False))
        if status is ParticipantStatus.LOST:
            flow.lost += 1
            flow.lost_reasons.extend(typed.get("lost_to_follow_up") or [NO_REASON])
        if "discontinued_intervention" in typed:
            flow.discontinued += 1
            flow.discontinued_reasons.extend(typed["discontinued_intervention"])
        excluded = []
        if status is ParticipantStatus.WITHDRAWN:
            flow.withdrew += 1
            flow.withdrew_reasons.extend(typed.get("withdrawal") or [NO_REASON])
            excluded.append("Withdrew consent")
        if pid in ineligible_after:
            excluded.append("Found ineligible after randomization")
        if excluded:
            flow.excluded_from_analysis += 1
            flow.excluded_reasons.append(excluded[0])
    flows = [pooled] if blinded else list(arms.values())
    for flow in flows:
        flow.received = flow.allocated - flow.not_received
        flow.analysed = flow.allocated - flow.excluded_from_analysis
        for name in ("not_received_reasons", "lost_reasons", "discontinued_reasons", "withdrew_reasons",
                     "excluded_reasons"):
            setattr(flow, name, _reasons(getattr(flow, name)))
    ordered = flows
    ineligible = outcomes.get(ScreeningOutcome.INELIGIBLE, 0)
    declined = outcomes.get(ScreeningOutcome.DECLINED, 0)
    randomized = sum(f.allocated for f in ordered)
    return Consort(trial=trial, blinded=blinded, assessed=assessed,
                   excluded=ineligible + declined + len(other_reasons), not_meeting_criteria=ineligible,
                   by_criterion=_reasons(criteria), declined=declined, other=len(other_reasons),
                   other_reasons=_reasons(other_reasons), awaiting_randomization=awaiting, randomized=randomized,
                   arms=ordered)


# -- enrollment over time -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EnrollmentSeries:
    points: list[tuple[dt.date, int]]  # (date, cumulative randomized by the end of that date)
    target: int
    projected_date: dt.date | None  # when the target is reached at the average rate so far


def enrollment_over_time(session: Session, trial: str) -> EnrollmentSeries:
    proto = trials.current_protocol(session, trial)
    per_day: Counter[dt.date] = Counter(ts.date() for ts in session.scalars(
        select(Allocation.randomized_at).where(Allocation.trial_id == trial)))
    points, total = [], 0
    for day in sorted(per_day):
        total += per_day[day]
        points.append((day, total))
    projected = None
    if points and 0 < total < proto.target_enrollment:
        span = (points[-1][0] - points[0][0]).days + 1
        rate = total / span  # per day, over the recruitment so far
        projected = points[-1][0] + dt.timedelta(days=round((proto.target_enrollment - total) / rate))
    return EnrollmentSeries(points, proto.target_enrollment, projected)


# -- visits due (site-scoped) ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DueVisit:
    participant: str
    site: str
    visit: str
    label: str
    target: dt.date
    window_start: dt.date
    window_end: dt.date
    status: VisitStatus
    pending_forms: tuple[str, ...]  # forms of the visit not complete yet (outcome forms only when asked)


@dataclass(frozen=True)
class VisitsDue:
    today: list[DueVisit]
    this_week: list[DueVisit]
    overdue: list[DueVisit]


def visits_due(session: Session, actor: Actor, trial: str, today: dt.date, *, outcome_only: bool = False,
               horizon_days: int = 7) -> VisitsDue:
    """Scheduled visits of randomized participants at the actor's sites, not complete and not marked missed.

    Due today: the window is open and the target date has come. This week: the target falls within the next
    ``horizon_days`` days. Overdue: the window closed with nothing recorded. ``outcome_only`` keeps the visits
    with an outcome form still to enter (the assessor's view) and lists only those forms.
    """
    proto = trials.current_protocol(session, trial)
    outcome_ids = {f.id for f in proto.outcome_forms}
    horizon = today + dt.timedelta(days=horizon_days)
    stmt = (select(VisitRecord, Participant.code, Participant.site_code)
            .join(Participant, Participant.id == VisitRecord.participant_id)
            .where(VisitRecord.trial_id == trial, VisitRecord.scheduled.is_(True),
                   VisitRecord.complete.is_(False), VisitRecord.missed.is_(False),
                   VisitRecord.window_start.is_not(None), VisitRecord.window_start <= horizon,
                   Participant.status == ParticipantStatus.RANDOMIZED))
    if actor.role is not None and actor.role.site_bound and not actor.console:
        stmt = stmt.where(Participant.site_code.in_(actor.sites))
    rows = session.execute(stmt).all()
    done: dict[int, set[str]] = defaultdict(set)
    if rows:
        for vid, fid in session.execute(select(FormRecord.visit_id, FormRecord.form_id).where(
                FormRecord.visit_id.in_([r[0].id for r in rows]), FormRecord.status == "complete")):
            done[vid].add(fid)
    out = VisitsDue([], [], [])
    for v, code, site in rows:
        pending = tuple(f for f in visits.visit_forms(proto, v) if f not in done[v.id]
                        and (not outcome_only or f in outcome_ids))
        if outcome_only and not pending:
            continue
        status = visits.visit_status(v, today)
        item = DueVisit(code, site, v.code, v.label, v.target_date, v.window_start, v.window_end, status, pending)
        if status is VisitStatus.OVERDUE:
            out.overdue.append(item)
        elif status is VisitStatus.OPEN and v.target_date <= today:
            out.today.append(item)
        elif today < v.target_date <= horizon:
            out.this_week.append(item)
    out.today.sort(key=lambda d: (d.window_end, d.participant))
    out.this_week.sort(key=lambda d: (d.target, d.participant))
    out.overdue.sort(key=lambda d: (d.window_end, d.participant))
    return out


def primary_visit(proto: Protocol) -> Visit | None:
    """The primary-endpoint visit: the one whose label says so (hip-pt-clbp W12, MASH W8)."""
    return next((v for v in proto.visits if "primary" in v.label.lower()), None)


def overdue_primary_visits(session: Session, trial: str, today: dt.date) -> list[DueVisit]:
    from trialmgr.services.context import cli_actor

    proto = trials.current_protocol(session, trial)
    primary = primary_visit(proto)
    if primary is None:
        return []
    return [d for d in visits_due(session, cli_actor(trial=trial), trial, today, horizon_days=0).overdue
            if d.visit == primary.code]


# -- queries, enrollments, source data verification, adverse events ------------------------------------------

def recent_enrollments(session: Session, actor: Actor, trial: str, limit: int = 10) -> list[Participant]:
    stmt = select(Participant).where(Participant.trial_id == trial)
    if actor.role is not None and actor.role.site_bound and not actor.console:
        stmt = stmt.where(Participant.site_code.in_(actor.sites))
    return list(session.scalars(stmt.order_by(Participant.enrolled_at.desc(), Participant.id.desc()).limit(limit)))


def awaiting_randomization(session: Session, actor: Actor, trial: str) -> list[Participant]:
    stmt = select(Participant).where(Participant.trial_id == trial, Participant.status == ParticipantStatus.ENROLLED)
    if actor.role is not None and actor.role.site_bound and not actor.console:
        stmt = stmt.where(Participant.site_code.in_(actor.sites))
    return list(session.scalars(stmt.order_by(Participant.enrolled_at)))


@dataclass(frozen=True)
class SdvRow:
    key: str  # site code or form id
    complete: int
    verified: int

    @property
    def percent(self) -> int:
        return round(100 * self.verified / self.complete) if self.complete else 0


def sdv_progress(session: Session, trial: str) -> dict[str, list[SdvRow]]:
    """Complete forms and how many of them a monitor has verified, by site and by form."""
    rows = session.execute(
        select(Participant.site_code, FormRecord.form_id, func.count(), func.count(FormRecord.sdv_at))
        .join(Participant, Participant.id == FormRecord.participant_id)
        .where(FormRecord.trial_id == trial, FormRecord.status == "complete")
        .group_by(Participant.site_code, FormRecord.form_id)).all()
    by_site: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_form: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for site, form_id, n, verified in rows:
        for table, key in ((by_site, site), (by_form, form_id)):
            table[key][0] += n
            table[key][1] += verified
    return {"by_site": [SdvRow(k, *v) for k, v in sorted(by_site.items())],
            "by_form": [SdvRow(k, *v) for k, v in sorted(by_form.items())],
            "total": [SdvRow("all", sum(v[0] for v in by_site.values()), sum(v[1] for v in by_site.values()))]}


@dataclass(frozen=True)
class AwaitingSdv:
    participant: str
    site: str
    form_id: str
    visit: str | None  # None for an any-time form
    instance: int | None
    updated_at: dt.datetime


def awaiting_sdv(session: Session, trial: str, limit: int = 25) -> tuple[int, list[AwaitingSdv]]:
    """Complete forms no monitor has verified yet (a change after verification puts a form back here): how
    many, and the `limit` longest waiting (oldest last change first), for the monitor's worklist."""
    base = (select(Participant.code, Participant.site_code, FormRecord.form_id, VisitRecord.code,
                   FormRecord.instance, FormRecord.updated_at)
            .join(Participant, Participant.id == FormRecord.participant_id)
            .outerjoin(VisitRecord, VisitRecord.id == FormRecord.visit_id)
            .where(FormRecord.trial_id == trial, FormRecord.status == "complete", FormRecord.sdv_at.is_(None)))
    total = session.scalar(select(func.count()).select_from(base.subquery()))
    rows = session.execute(base.order_by(FormRecord.updated_at, FormRecord.id).limit(limit)).all()
    return total or 0, [AwaitingSdv(code, site, form_id, visit, None if visit else instance, at)
                        for code, site, form_id, visit, instance, at in rows]


@dataclass(frozen=True)
class AdverseEvent:
    record_id: int
    participant: str
    site: str
    instance: int
    status: str
    serious: bool
    values: dict[str, str]
    updated_at: dt.datetime


def adverse_events(session: Session, actor: Actor, trial: str, *, serious_only: bool = False,
                   limit: int = 50) -> list[AdverseEvent]:
    """Adverse events at the actor's sites, serious ones first, then the most recently changed."""
    stmt = (select(FormRecord, Participant.code, Participant.site_code)
            .join(Participant, Participant.id == FormRecord.participant_id)
            .where(FormRecord.trial_id == trial, FormRecord.form_id == AE_FORM))
    if serious_only:
        stmt = stmt.where(FormRecord.serious.is_(True))
    if actor.role is not None and actor.role.site_bound and not actor.console:
        stmt = stmt.where(Participant.site_code.in_(actor.sites))
    rows = session.execute(stmt.order_by(FormRecord.serious.desc(), FormRecord.updated_at.desc(),
                                         FormRecord.id.desc()).limit(limit)).all()
    values: dict[int, dict[str, str]] = defaultdict(dict)
    if rows:
        for rid, fid, value in session.execute(select(FormValue.record_id, FormValue.field_id, FormValue.value)
                                               .where(FormValue.record_id.in_([r[0].id for r in rows]))):
            if value is not None:
                values[rid][fid] = value
    return [AdverseEvent(r.id, code, site, r.instance, r.status, r.serious, values[r.id], r.updated_at)
            for r, code, site in rows]


def serious_adverse_events(session: Session, actor: Actor, trial: str, limit: int = 50) -> list[AdverseEvent]:
    return adverse_events(session, actor, trial, serious_only=True, limit=limit)
