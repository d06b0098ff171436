"""/api/v1/.../visits, .../forms, queries and source data verification: the same services as the CRF pages."""

from __future__ import annotations

from flask import g, request

from trialmgr.api import bp
from trialmgr.api.db import transaction
from trialmgr.api.idempotency import idempotent, respond
from trialmgr.api.participants import READERS, _body
from trialmgr.domain.errors import NotFound, ValidationFailed
from trialmgr.domain.vocab import Role
from trialmgr.services import crf, enrollment, queries, visits
from trialmgr.services.crf import EDITORS
from trialmgr.web.access import allow
from trialmgr.web.db import read_session


def _iso(d):
    return d.isoformat() if d else None


def visit_json(v: visits.VisitView) -> dict:
    r = v.record
    return {"code": r.code, "label": r.label, "scheduled": r.scheduled, "status": v.status.value,
            "target_date": _iso(r.target_date),
            "window": [_iso(r.window_start), _iso(r.window_end)] if r.window_start else None,
            "visit_date": _iso(r.visit_date), "missed_reason": r.missed_reason,
            "forms": [{"form": f, "status": st} for f, st in v.forms]}


def form_json(view: crf.FormView) -> dict:
    rec = view.record
    derived = {d.id for d in view.form.derived}
    return {
        "form": view.form.id, "title": view.form.title, "status": view.status,
        "visit": view.visit.code if view.visit else None, "instance": rec.instance if rec else None,
        "version": rec.version if rec else None,
        "values": {k: v for k, v in view.values.items() if k not in derived},
        "derived": {k: v for k, v in view.values.items() if k in derived},
        "missing": view.missing,
        "sdv": {"by": rec.sdv_by, "at": rec.sdv_at.isoformat().replace("+00:00", "Z")} if rec and rec.sdv_at else None,
        "updated_at": rec.updated_at.isoformat().replace("+00:00", "Z") if rec else None,
        "updated_by": rec.updated_by if rec else None,
    }


def _save_args(body: dict) -> dict:
    values = body.get("values", {})
    missing = body.get("missing", {})
    errors = {}
    if not isinstance(values, dict):
        errors["values"] = "must be an object of field values"
    if not isinstance(missing, dict):
        errors["missing"] = "must be an object of field -> missing-reason code (ND, RF, UNK)"
    version = body.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        errors["version"] = "must be the whole-number version you read"
    if errors:
        raise ValidationFailed(errors)
    return {"missing": missing, "status": body.get("status", "complete"), "reason": body.get("reason"),
            "visit_date": body.get("visit_date"), "expected_version": version}, values


@bp.get("/trials/<trial>/participants/<participant>/visits")
@allow(*READERS)
def participant_visits(trial: str, participant: str):
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, participant)
    return respond(s, {"participant": p.code, "visits": [visit_json(v) for v in visits.list_visits(s, p)]})


@bp.get("/trials/<trial>/participants/<participant>/visits/<visit>/forms/<form>")
@allow(*READERS)
def get_visit_form(trial: str, participant: str, visit: str, form: str):
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, participant)
    return respond(s, form_json(crf.read_form(s, g.actor, p, form, visit)))


@bp.put("/trials/<trial>/participants/<participant>/visits/<visit>/forms/<form>")
@allow(*EDITORS)
def put_visit_form(trial: str, participant: str, visit: str, form: str):
    with transaction() as s:
        p = crf.participant_for_entry(s, g.actor, trial, participant, visit)
        kwargs, values = _save_args(_body())
        res = crf.save_form(s, g.actor, p, form, values, visit_code=visit, **kwargs)
        out = form_json(res.view)
        out.update(changed=res.changed, queries_opened=res.queries_opened, deviation_created=res.deviation_created)
        return respond(s, out)


@bp.post("/trials/<trial>/participants/<participant>/forms/<form>")
@allow(*EDITORS)
@idempotent
def create_anytime_form(trial: str, participant: str, form: str):
    with transaction() as s:
        p = crf.participant_for_entry(s, g.actor, trial, participant)
        kwargs, values = _save_args(_body())
        res = crf.save_form(s, g.actor, p, form, values, **kwargs)
        return respond(s, form_json(res.view), 201)


@bp.get("/trials/<trial>/participants/<participant>/forms/<form>/<int:instance>")
@allow(*READERS)
def get_anytime_form(trial: str, participant: str, form: str, instance: int):
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, participant)
    return respond(s, form_json(crf.read_form(s, g.actor, p, form, None, instance=instance)))


@bp.put("/trials/<trial>/participants/<participant>/forms/<form>/<int:instance>")
@allow(*EDITORS)
def put_anytime_form(trial: str, participant: str, form: str, instance: int):
    with transaction() as s:
        p = crf.participant_for_entry(s, g.actor, trial, participant)
        kwargs, values = _save_args(_body())
        res = crf.save_form(s, g.actor, p, form, values, instance=instance, **kwargs)
        return respond(s, form_json(res.view))


@bp.post("/trials/<trial>/participants/<participant>/visits/<visit>/forms/<form>/verify")
@allow(Role.MONITOR)
def verify_visit_form(trial: str, participant: str, visit: str, form: str):
    with transaction() as s:
        p = enrollment.get_participant(s, g.actor, trial, participant)
        crf.verify_source(s, g.actor, p, form, visit)
        return respond(s, form_json(crf.read_form(s, g.actor, p, form, visit)))


def query_json(q, p, rec) -> dict:
    return {"id": q.id, "participant": p.code, "form": rec.form_id, "record": rec.id, "field": q.field_id,
            "status": q.status, "text": q.text, "automatic": q.check_id is not None, "opened_by": q.opened_by,
            "opened_at": q.opened_at.isoformat().replace("+00:00", "Z"), "answer": q.answer,
            "answered_by": q.answered_by, "closed_by": q.closed_by}


@bp.get("/trials/<trial>/queries")
@allow(*READERS)
def list_queries(trial: str):
    s = read_session()
    rows = queries.list_queries(s, g.actor, trial, status=request.args.get("status"),
                                participant=request.args.get("participant"))
    return respond(s, {"queries": [query_json(*r) for r in rows], "open_counts": queries.open_counts(s, trial)})


@bp.post("/trials/<trial>/queries")
@allow(*queries.RAISERS)
@idempotent
def open_query(trial: str):
    body = _body()
    for name in ("participant", "form", "field", "text"):
        if not isinstance(body.get(name), str):
            raise ValidationFailed({name: "is required (text)"})
    with transaction() as s:
        p = enrollment.get_participant(s, g.actor, trial, body["participant"])
        instance = body.get("instance", 1)
        view = crf.read_form(s, g.actor, p, body["form"], body.get("visit"), instance=instance)
        if view.record is None:
            raise NotFound("that form has not been entered yet; there is nothing to query")
        q = queries.open_query(s, g.actor, p, view.record, body["field"], body["text"])
        return respond(s, query_json(q, p, view.record), 201)


@bp.post("/trials/<trial>/queries/<int:query>/answer")
@allow(*queries.ANSWERERS)
def answer_query(trial: str, query: int):
    body = _body()
    with transaction() as s:
        q = queries.answer_query(s, g.actor, trial, query, body.get("answer"))
        q, p = queries.get_query(s, g.actor, trial, q.id)
        from trialmgr.db.models_crf import FormRecord

        return respond(s, query_json(q, p, s.get(FormRecord, q.record_id)))


@bp.post("/trials/<trial>/queries/<int:query>/close")
@allow(*queries.RAISERS)
def close_query(trial: str, query: int):
    body = request.get_json(silent=True) or {}
    with transaction() as s:
        q = queries.close_query(s, g.actor, trial, query, body.get("note") if isinstance(body, dict) else None)
        q, p = queries.get_query(s, g.actor, trial, q.id)
        from trialmgr.db.models_crf import FormRecord

        return respond(s, query_json(q, p, s.get(FormRecord, q.record_id)))
