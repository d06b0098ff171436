"""Read-only summaries for the case report form pages: per-record SDV and open-query counts, the any-time
forms of a participant with a few key values, queries by field, and the query list with visit codes.

Kept apart from services/crf.py and services/queries.py (which own the writes) so that reading a page never
needs more than one query per kind of thing, whatever the number of visits or forms.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trialmgr.db.models_crf import FormRecord, FormValue, Query, VisitRecord
from trialmgr.db.models_trial import Participant
from trialmgr.domain import crf as crflib
from trialmgr.domain.protocol import FieldSpec, FormDef, Protocol
from trialmgr.services import queries
from trialmgr.services.context import Actor

# How many of an any-time form's first fields summarise one instance in the participant's list.
SUMMARY_FIELDS = 4
NOT_CLOSED = ("open", "answered")


@dataclass(frozen=True)
class RecordInfo:
    record: FormRecord
    open_queries: int

    @property
    def verified(self) -> bool:
        return self.record.sdv_at is not None


def record_infos(session: Session, participant: Participant) -> dict[tuple[int | None, str, int], RecordInfo]:
    """Every form record of a participant keyed by (visit id or None, form id, instance)."""
    counts = dict(session.execute(
        select(Query.record_id, func.count()).where(Query.participant_id == participant.id,
                                                     Query.status.in_(NOT_CLOSED))
        .group_by(Query.record_id)).all())
    out = {}
    for rec in session.scalars(select(FormRecord).where(FormRecord.participant_id == participant.id)):
        out[(rec.visit_id, rec.form_id, rec.instance)] = RecordInfo(rec, counts.get(rec.id, 0))
    return out


def value_words(spec: FieldSpec | None, text: str | None, missing: str | None = None) -> str:
    """A stored value in words ("Female", "yes", "[missing: RF — refused]"); "" when nothing is stored."""
    if missing:
        return f"missing: {missing} — {crflib.MISSING_CODES.get(missing, 'unknown code')}"
    if text is None or text == "":
        return ""
    if spec is None:
        return text
    try:
        return crflib.display_value(spec, crflib.deserialize_value(spec, text))
    except (ValueError, KeyError):  # stored under an older protocol version: shown as it was kept
        return text


@dataclass(frozen=True)
class AnytimeEntry:
    form: FormDef
    info: RecordInfo
    summary: list[tuple[str, str]]  # (label, value in words) of the form's first fields

    @property
    def instance(self) -> int:
        return self.info.record.instance


def anytime_entries(session: Session, proto: Protocol, participant: Participant) -> dict[str, list[AnytimeEntry]]:
    """{form id: instances, oldest first} for each any-time form of the protocol (empty lists included)."""
    infos = [i for (visit_id, _, _), i in record_infos(session, participant).items() if visit_id is None]
    out: dict[str, list[AnytimeEntry]] = {f.id: [] for f in proto.anytime_forms}
    ids = [i.record.id for i in infos if i.record.form_id in out]
    values: dict[int, dict[str, FormValue]] = {}
    if ids:
        for v in session.scalars(select(FormValue).where(FormValue.record_id.in_(ids))):
            values.setdefault(v.record_id, {})[v.field_id] = v
    for info in sorted(infos, key=lambda i: (i.record.form_id, i.record.instance)):
        if info.record.form_id not in out:
            continue
        form = proto.form(info.record.form_id)
        stored = values.get(info.record.id, {})
        summary = []
        for spec in form.fields[:SUMMARY_FIELDS]:
            row = stored.get(spec.id)
            if row is not None:
                summary.append((spec.label, value_words(spec, row.value, row.missing_code)))
        out[form.id].append(AnytimeEntry(form, info, summary))
    return out


def queries_by_field(session: Session, record: FormRecord) -> dict[str, list[Query]]:
    """Every query on a form record, by field, oldest first."""
    out: dict[str, list[Query]] = {}
    for q in session.scalars(select(Query).where(Query.record_id == record.id).order_by(Query.id)):
        out.setdefault(q.field_id, []).append(q)
    return out


@dataclass(frozen=True)
class QueryRow:
    query: Query
    participant: Participant
    record: FormRecord
    visit_code: str | None


def query_rows(session: Session, actor: Actor, trial_id: str, *, status: str | None = None,
               participant: str | None = None, site: str | None = None) -> list[QueryRow]:
    """queries.list_queries (same site restriction and status check) plus a site filter and visit codes."""
    rows = queries.list_queries(session, actor, trial_id, status=status or None, participant=participant or None)
    if site:
        rows = [r for r in rows if r[1].site_code == site.upper()]
    visit_ids = {r[2].visit_id for r in rows if r[2].visit_id is not None}
    codes = dict(session.execute(select(VisitRecord.id, VisitRecord.code)
                                 .where(VisitRecord.id.in_(visit_ids))).all()) if visit_ids else {}
    return [QueryRow(q, p, rec, codes.get(rec.visit_id)) for q, p, rec in rows]


def open_counts(rows: list[QueryRow]) -> tuple[dict[str, int], dict[str, int]]:
    """Not-closed queries per site and per participant, over rows the actor may already see."""
    by_site: dict[str, int] = {}
    by_participant: dict[str, int] = {}
    for r in rows:
        if r.query.status in NOT_CLOSED:
            by_site[r.participant.site_code] = by_site.get(r.participant.site_code, 0) + 1
            by_participant[r.participant.code] = by_participant.get(r.participant.code, 0) + 1
    return by_site, by_participant
