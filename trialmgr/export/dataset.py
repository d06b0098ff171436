"""Reading a trial's data for export: deterministic order, streamed, with blinding and de-identification applied
in one place."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from trialmgr.db.models_crf import FormRecord, FormValue, Query, VisitRecord
from trialmgr.db.models_trial import Allocation, Participant, Screening
from trialmgr.domain import crf as crflib
from trialmgr.domain.protocol import FieldSpec, FormDef, Protocol

SHIFT_DAYS = 30


@dataclass
class ExportOptions:
    blinded: bool = False
    deidentified: bool = False
    secret: bytes = b""  # instance secret: keys the blinded arm letters and the date shifts

    def arm_letters(self, proto: Protocol) -> dict[str, str]:
        """Neutral letters for the arms; the mapping is keyed by the instance secret, so it reveals nothing."""
        codes = sorted(a.code for a in proto.arms)
        order = sorted(codes, key=lambda c: hmac.new(self.secret, f"{proto.id}|arm|{c}".encode(),
                                                     hashlib.sha256).hexdigest())
        return {code: chr(ord("A") + i) for i, code in enumerate(order)}

    def shift(self, key: str) -> dt.timedelta:
        """A participant's date shift (-30..+30 days, never 0), the same in every export."""
        if not self.deidentified:
            return dt.timedelta(0)
        n = int.from_bytes(hmac.new(self.secret, f"shift|{key}".encode(), hashlib.sha256).digest()[:4], "big")
        days = n % (2 * SHIFT_DAYS + 1) - SHIFT_DAYS
        return dt.timedelta(days=days or SHIFT_DAYS)


@dataclass
class Subject:
    id: int
    code: str
    site: str
    strata: dict
    stratum: str
    status: str
    consent_date: dt.date
    randomized_at: dt.datetime | None
    arm: str | None
    shift: dt.timedelta = field(default=dt.timedelta(0))


def subjects(session: Session, proto: Protocol, opts: ExportOptions) -> list[Subject]:
    letters = opts.arm_letters(proto)
    # Columns, not Participant objects: the ORM's bookkeeping for 10,000 of them took a tenth of a second.
    rows = session.execute(select(Participant.id, Participant.code, Participant.site_code, Participant.strata,
                                  Participant.stratum, Participant.status, Participant.consent_date,
                                  Participant.randomized_at, Allocation.arm).outerjoin(
        Allocation, Allocation.participant_id == Participant.id).where(Participant.trial_id == proto.id)
        .order_by(Participant.site_code, Participant.number)).all()
    out = []
    for pid, code, site, strata, stratum, status, consent, randomized, arm in rows:
        out.append(Subject(pid, code, site, json.loads(strata), stratum, status.value, consent, randomized,
                           (letters.get(arm) if opts.blinded else arm) if arm else None, opts.shift(code)))
    return out


def date_text(d: dt.date | None, shift: dt.timedelta) -> str:
    return (d + shift).isoformat() if d else ""


def value_text(spec: FieldSpec | None, text: str | None, shift: dt.timedelta) -> str:
    """A stored value as exported: dates shifted for de-identified bundles."""
    if not text:  # no value (an empty stored text is no date to shift either)
        return ""
    if spec is not None and spec.type == "date" and shift:
        return (dt.date.fromisoformat(text) + shift).isoformat()
    return text


def exported_fields(form: FormDef, opts: ExportOptions) -> list[FieldSpec]:
    return [f for f in form.fields if not (opts.deidentified and f.identifier)]


class RecordRow:
    """One form record with its values (field id -> stored text) and missing codes (field id -> code).

    ``plain``: True when it is known that no value and no missing code holds a QUOTED character (PostgreSQL
    checks a participant's values at once); False when not known. ``keys`` and ``texts``: the field ids and
    their texts as read (PostgreSQL, a record with no missing code and no NULL value): ``values`` is then built
    from them when first asked for, and the formatting takes the texts as they are instead (bundle._FormPlan).
    Neither is part of the record's content (==)."""

    __slots__ = ("subject", "visit_code", "visit_position", "visit_date", "instance", "status", "_values",
                 "missing", "sdv", "plain", "keys", "texts")

    def __init__(self, subject: Subject, visit_code: str | None, visit_position: int, visit_date: dt.date | None,
                 instance: int, status: str, values: dict[str, str] | None, missing: dict[str, str], sdv: bool,
                 plain: bool = False, keys: list[str] | None = None, texts: list[str] | None = None) -> None:
        self.subject, self.visit_code, self.visit_position, self.visit_date = (subject, visit_code, visit_position,
                                                                               visit_date)
        self.instance, self.status, self._values, self.missing, self.sdv = instance, status, values, missing, sdv
        self.plain, self.keys, self.texts = plain, keys, texts

    @property
    def values(self) -> dict[str, str]:
        if self._values is None:
            self._values = dict(zip(self.keys or (), self.texts or (), strict=True))
        return self._values

    def _content(self) -> tuple:
        return (self.subject, self.visit_code, self.visit_position, self.visit_date, self.instance, self.status,
                self.values, self.missing, self.sdv)

    def __eq__(self, other: object) -> bool:
        return self._content() == other._content() if isinstance(other, RecordRow) else NotImplemented

    __hash__ = None  # type: ignore[assignment] - mutable, as the dataclass it was

    def __repr__(self) -> str:
        return f"RecordRow{self._content()!r}"


# Characters that CSV quoting (QUOTE_MINIMAL) or XML escaping would change: text without any of them is
# written as it is (bundle._FormPlan).
QUOTED = re.compile("[\",\r\n\t&<>']")


def records(session: Session, proto: Protocol, subjects_by_id: dict[int, Subject], form_id: str | None = None
            ) -> Iterator[tuple[str, RecordRow]]:
    """(form id, record) for every record (of one form, or all), with its values, ordered by participant,
    visit, form and instance. One streamed query: memory holds one record (on PostgreSQL one participant's records)
    at a time, whatever the trial's size."""
    if session.get_bind().dialect.name == "postgresql":
        return _records_pg(session, proto, subjects_by_id, form_id)
    return _records_flat(session, proto, subjects_by_id, form_id)


def _records_flat(session: Session, proto: Protocol, subjects_by_id: dict[int, Subject], form_id: str | None
                  ) -> Iterator[tuple[str, RecordRow]]:
    """records() on any database: one row per value (the flat join), grouped here."""
    stmt = (select(FormRecord.id, FormRecord.participant_id, FormRecord.form_id, FormRecord.instance,
                   FormRecord.status, FormRecord.sdv_at, VisitRecord.code, VisitRecord.position, VisitRecord.visit_date,
                   FormValue.field_id, FormValue.value, FormValue.missing_code)
            .join(Participant, Participant.id == FormRecord.participant_id)
            .outerjoin(VisitRecord, VisitRecord.id == FormRecord.visit_id)
            .outerjoin(FormValue, FormValue.record_id == FormRecord.id)
            .where(FormRecord.trial_id == proto.id)
            .order_by(Participant.site_code, Participant.number, func.coalesce(VisitRecord.position, 1_000_000),
                      FormRecord.form_id,
                      FormRecord.instance, FormRecord.id))
    if form_id is not None:
        stmt = stmt.where(FormRecord.form_id == form_id)
    current: RecordRow | None = None
    current_id = current_form = None
    # Core rows straight from the driver (a server-side cursor on PostgreSQL): no ORM row processing.
    # (Options on the statement, not the connection: Connection.execution_options changes the connection itself.)
    result = session.connection().execute(stmt.execution_options(stream_results=True, yield_per=5000))
    for rid, pid, fid, instance, status, sdv_at, vcode, pos, vdate, field_id, value, missing in result:
        if rid != current_id:
            if current is not None:
                yield current_form, current
            current = RecordRow(subjects_by_id[pid], vcode, pos or 0, vdate, instance, status, {}, {},
                                sdv_at is not None)
            current_id, current_form = rid, fid
        if field_id is None:
            continue
        if missing:
            current.missing[field_id] = missing
        elif value is not None:
            current.values[field_id] = value
    if current is not None:
        yield current_form, current


_PG_RECORDS = """
SELECT p.id, x.form_ids, x.instances, x.statuses, x.sdvs, x.vcodes, x.positions, x.visit_dates,
       x.fields, x.vals, x.missing
FROM participant p
CROSS JOIN LATERAL (
  SELECT a.*, b.*
  FROM (SELECT array_agg(r.id) AS ids, array_agg(r.form_id) AS form_ids, array_agg(r.instance) AS instances,
               array_agg(r.status) AS statuses, array_agg(r.sdv) AS sdvs, array_agg(r.vcode) AS vcodes,
               array_agg(r.position) AS positions, array_agg(r.visit_date) AS visit_dates
        FROM (SELECT fr.id, fr.form_id, fr.instance, fr.status, fr.sdv_at IS NOT NULL AS sdv, v.code AS vcode,
                     v.position, v.visit_date
              FROM form_record fr
              LEFT JOIN (SELECT id, code, position, visit_date FROM visit WHERE participant_id = p.id OFFSET 0) v
                ON v.id = fr.visit_id
              WHERE fr.participant_id = p.id AND fr.trial_id = %(trial)s {form_filter}
              ORDER BY coalesce(v.position, 1000000), fr.form_id, fr.instance, fr.id OFFSET 0) r
        HAVING count(*) > 0) a
  CROSS JOIN LATERAL (
    SELECT array_agg(fv.field_id) AS fields, array_agg(fv.value) AS vals,
           CASE WHEN count(fv.missing_code) > 0 THEN array_agg(fv.missing_code) END AS missing
    FROM unnest(a.ids) AS u(id)
    CROSS JOIN LATERAL (SELECT NULL AS field_id, NULL AS value, NULL AS missing_code
                        UNION ALL
                        SELECT field_id, value, missing_code FROM form_value WHERE record_id = u.id) fv) b
  OFFSET 0
) x
WHERE p.trial_id = %(trial)s
ORDER BY p.site_code, p.number
"""
# One row per participant, not per record: psycopg's work per COPY row (reading, the row's tuple, a loader call
# per column) was most of the Python side's cost of reading 300,000 records; per participant it is 30 times
# less, and the arrays hold the same cells. The participants come in order from their (trial, site, number)
# index and each one's few records are sorted in memory, instead of sorting all records on disk.
# - The record columns are arrays in record order (a), and its values come in the same order (b), flat, each
#   record's led by a marker: a NULL field id (a stored field id is never NULL). A record's values are those
#   between its marker and the next: no per-record counts to compute. (PostgreSQL 15's array_agg cannot
#   concatenate arrays of unequal lengths; ordered aggregates would sort once per aggregate.) The order of b
#   is that of unnest(a.ids): the LATERAL reference to u.id makes the Append of the marker and the record's
#   values the inner side of a nested loop, whose rows the plain aggregate takes as they come.
# - A record's participant is of its trial and its visit one of its participant's visits (services.crf creates
#   them so): the participant's few visits are hashed instead of an index lookup per record.
# - The missing codes' array is NULL when the participant has none (the usual case): 3.6 M fewer elements.
# - OFFSET 0 keeps x a subquery: flattened, the planner memoized b on a.ids (never the same twice).
# - Participants without a record (of the form) give no row (HAVING).


def _records_pg(session: Session, proto: Protocol, subjects_by_id: dict[int, Subject], form_id: str | None
                ) -> Iterator[tuple[str, RecordRow]]:
    """records() on PostgreSQL: one COPY row per participant with its records' columns as arrays and their
    values as flat arrays (_PG_RECORDS), split here, streamed with one binary COPY on the session's connection.
    The same records in the same order, with the same content, as the flat join; memory holds one participant's
    records at a time.

    COPY, not a server-side cursor: a cursor computes rows only when they are fetched, so the database waited
    for Python to ask for each batch (and a thread fetching ahead took the GIL from the formatting); COPY keeps
    the database computing while Python formats, as far ahead as the socket's buffers let it. Early exit
    cancels the COPY, and with it the transaction (only the export reads this, to the end)."""
    conn = session.connection().connection.driver_connection
    sql = _PG_RECORDS.format(form_filter="AND fr.form_id = %(form)s" if form_id is not None else "")
    params = {"trial": proto.id, "form": form_id}
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM ({sql}) q LIMIT 0", params)  # noqa: S608 - the column types, for COPY
        types = [c.type_code for c in cur.description]
        with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT binary)", params) as cp:
            cp.set_types(types)
            index = list.index
            for pid, *columns, fields, vals, missing in cp.rows():
                subject = subjects_by_id[pid]
                # The participant's values at once, not each record's: (None is a marker or a NULL value)
                plain = not QUOTED.search("".join(filter(None, vals))
                                          + ("".join(filter(None, missing)) if missing is not None else ""))
                fields.append(None)  # a marker after the last record too
                start = 1  # a record's values start after its marker and end at the next one
                # (strict=False in the loops run per record: the arrays have the lengths their query gives them)
                for fid, instance, status, sdv, vcode, pos, vdate in zip(*columns, strict=False):
                    end = index(fields, None, start)
                    texts = vals[start:end]
                    codes = missing[start:end] if missing is not None else None
                    if None not in texts and not (codes and any(codes)):  # the usual record: no code, no NULL
                        # (the values as read: their dict is built if asked for, RecordRow.values)
                        yield fid, RecordRow(subject, vcode, pos or 0, vdate, instance, status, None, {}, sdv, plain,
                                             fields[start:end], texts)
                    else:
                        values: dict[str, str] = {}
                        missed: dict[str, str] = {}
                        for field_id, value, code in zip(fields[start:end], texts, codes or [None] * len(texts),
                                                         strict=True):
                            if code:
                                missed[field_id] = code
                            elif value is not None:
                                values[field_id] = value
                        yield fid, RecordRow(subject, vcode, pos or 0, vdate, instance, status, values, missed, sdv,
                                             plain)
                    start = end + 1


def screenings(session: Session, proto: Protocol) -> Iterator[Screening]:
    yield from session.scalars(select(Screening).where(Screening.trial_id == proto.id).order_by(Screening.id))


def query_rows(session: Session, proto: Protocol) -> Iterator[tuple[Query, FormRecord]]:
    yield from session.execute(select(Query, FormRecord).join(FormRecord, FormRecord.id == Query.record_id)
                               .where(Query.trial_id == proto.id).order_by(Query.id))


def label_of(spec: FieldSpec, text: str) -> str:
    if not text:
        return ""
    if spec.type == "choice":
        return crflib.display_value(spec, text)
    if spec.type == "multichoice":
        return crflib.display_value(spec, tuple(c for c in text.split(crflib.MULTI_SEP) if c))
    return ""
