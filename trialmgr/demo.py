"""A living demo trial: synthetic participants at every stage, created through the same services as real
data (so validated and audited), with the clock moved back to when each step would have happened."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from trialmgr import clock
from trialmgr.config import Settings
from trialmgr.db import Database
from trialmgr.domain.errors import DomainError
from trialmgr.domain.vocab import Role
from trialmgr.services import crf, enrollment, queries, randomization, trials, visits
from trialmgr.services.context import Actor
from trialmgr.synthetic import form_values

ENROLLMENT_DAYS = 240


def _actor(username: str, role: Role, trial: str, sites: tuple[str, ...] = ()) -> Actor:
    return Actor(username=username, role=role, trial=trial, sites=sites, full_name=username.title(),
                 client_addr="demo")


def _at(day: dt.date, rng: random.Random):
    return clock.travel_to(dt.datetime.combine(day, dt.time(rng.randint(8, 16), rng.randint(0, 59)), dt.UTC))


def populate(db: Database, settings: Settings, trial_id: str, n: int, seed: int = 2026) -> dict[str, int]:
    """Screen n candidates over the past months; most enroll and are randomized, visits done when due."""
    rng = random.Random(seed)
    counts = {"screened": 0, "ineligible": 0, "declined": 0, "randomized": 0, "forms": 0, "queries": 0}
    if n <= 0:
        return counts
    investigator = _actor("investigator", Role.INVESTIGATOR, trial_id)
    monitor = _actor("monitor", Role.MONITOR, trial_id)
    with db.session() as s:
        proto = trials.current_protocol(s, trial_id)
        if randomization.active_list(s, trial_id) is None:
            randomization.generate(s, investigator, settings, trial_id)
    sites = [site.code for site in proto.sites]
    real_today = clock.today()
    for i in range(n):
        day = real_today - dt.timedelta(days=int(ENROLLMENT_DAYS * (1 - i / n)))
        site = sites[i % len(sites)]
        staff = _actor("coordinator", Role.COORDINATOR, trial_id, (site,)) if site == "DE" else investigator
        answers = {"sex": rng.choice("FM"),
                   "date_of_birth": (day - dt.timedelta(days=365 * rng.randint(66, 84) + rng.randint(0, 300)))
                   .isoformat(),
                   "back_pain_months": str(rng.randint(7, 120)), "mmse_score": str(rng.randint(25, 30))}
        for spec in proto.screening_fields:
            if spec.type == "yesno":
                answers.setdefault(spec.id, "yes" if spec.id == "reads_speaks_language" else "no")
        fate = rng.random()
        if fate < 0.15:
            answers["back_pain_months"] = str(rng.randint(1, 5))
        elif fate < 0.2:
            answers["leg_pain_exceeds_back"] = "yes"
        with _at(day, rng), db.session() as s:
            res = enrollment.screen(s, staff, trial_id, answers, site=site)
            counts["screened"] += 1
            if not res.result.eligible:
                counts["ineligible"] += 1
                continue
            if fate > 0.95:
                enrollment.decline(s, staff, trial_id, res.screening.id, "not willing to attend twice a week")
                counts["declined"] += 1
                continue
            p = enrollment.enroll(s, staff, trial_id, res.screening.id, consent_date=day,
                                  consent_version=proto.consent_version)
            code = p.code
            _enter(s, staff, p, "BL", proto, rng, day, counts)
        if fate > 0.9 and i > n - 4:
            continue  # a few recent ones stay enrolled, awaiting randomization
        with _at(day, rng), db.session() as s:
            randomization.randomize(s, staff, settings, trial_id, code)
            counts["randomized"] += 1
        _follow_up(db, staff, monitor, trial_id, code, proto, rng, real_today, counts)
    return counts


# A decimal point typed one place off (8.34 s entered as 83.4 s): now and then, to set off the edit checks.
SLIP_RATE = 0.04


def _enter(s, staff: Actor, p, visit_code: str, proto, rng: random.Random, day: dt.date, counts: dict) -> None:
    visit = visits.get_visit(s, p, visit_code)
    for form_id in visits.visit_forms(proto, visit):
        # After baseline, the same person measured again: numbers near their baseline answers.
        baseline = None
        if visit_code != "BL" and form_id in visits.visit_forms(proto, visits.get_visit(s, p, "BL")):
            baseline = crf.read_form(s, staff, p, form_id, "BL").values or None
        raw = form_values(proto.form(form_id), rng, day, near=baseline)
        if form_id == "performance":
            _plausible_gait(proto.form(form_id), raw, rng, slip=baseline is not None and rng.random() < SLIP_RATE)
        if form_id == "session_log":
            planned = max(1, min(24, (day - (p.randomized_at.date() if p.randomized_at else day)).days // 7 * 2))
            raw.update(sessions_planned=str(planned), sessions_attended=str(rng.randint(planned * 2 // 3, planned)))
        crf.save_form(s, staff, p, form_id, raw, visit_code=visit_code, visit_date=day)
        counts["forms"] += 1


def _plausible_gait(form, raw: dict[str, str], rng: random.Random, *, slip: bool) -> None:
    """A 10 m walk at fast pace takes less time than at usual pace; with `slip`, the usual time was typed with
    its decimal point one place off (when that is still in range: the server's checks, not the range, catch it)."""
    usual, fast = raw.get("gait_usual_s"), raw.get("gait_fast_s")
    if usual is None or fast is None:
        return
    if Decimal(fast) >= Decimal(usual):
        low = form.field("gait_fast_s").min
        raw["gait_fast_s"] = format(max(Decimal(str(low)), (Decimal(usual) * Decimal("0.8")).quantize(
            Decimal("0.01"))), "f")
    if slip:
        wrong = (Decimal(usual) * 10).quantize(Decimal("0.01"))
        if wrong <= Decimal(str(form.field("gait_usual_s").max)):
            raw["gait_usual_s"] = format(wrong, "f")


def _follow_up(db: Database, staff: Actor, monitor: Actor, trial_id: str, code: str, proto, rng: random.Random,
               real_today: dt.date, counts: dict) -> None:
    with db.session(write=False) as s:
        p = enrollment.get_participant(s, staff, trial_id, code)
        due = [(v.record.code, v.window) for v in visits.list_visits(s, p) if v.record.code != "BL"]
    for visit_code, w in due:
        if w is None or w.end >= real_today or rng.random() < 0.08:
            break  # not due yet, or (sometimes) an overdue visit left for the coordinator's list
        late = rng.random() < 0.05
        day = w.end + dt.timedelta(days=2) if late else w.target + dt.timedelta(days=rng.randint(-3, 3))
        day = min(day, real_today)
        try:
            with _at(day, rng), db.session() as s:
                p = enrollment.get_participant(s, staff, trial_id, code)
                _enter(s, staff, p, visit_code, proto, rng, day, counts)
                if rng.random() < 0.15:
                    rec = crf.read_form(s, monitor, p, "pain", visit_code).record
                    queries.open_query(s, monitor, p, rec, "back_pain", "Please confirm against the pain diary.")
                    counts["queries"] += 1
                if rng.random() < 0.06:
                    serious = rng.random() < 0.3
                    values = form_values(proto.form("adverse_event"), rng, day, onset_date=day.isoformat(),
                                         serious="yes" if serious else "no")
                    values.pop("end_date", None)
                    if serious:
                        values["serious_criteria"] = "hospitalization"
                    crf.save_form(s, staff, p, "adverse_event", values)
        except DomainError:
            break  # a synthetic value the protocol refuses: stop this participant's follow-up here
    if rng.random() < 0.04:
        with _at(real_today, rng), db.session() as s:
            p = enrollment.get_participant(s, staff, trial_id, code)
            crf.save_form(s, staff, p, "withdrawal", {"withdrawal_date": real_today.isoformat(),
                                                      "type": rng.choice(["withdrawal", "lost_to_follow_up"]),
                                                      "reason": "moved away"})
