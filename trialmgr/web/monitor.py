"""Monitor's audit views: filtered log with keyset paging, per-field history, CSV, integrity status."""

from __future__ import annotations

from flask import Blueprint, Response, flash, g, redirect, render_template, request, stream_with_context, url_for

from trialmgr.domain.errors import ValidationFailed
from trialmgr.domain.protocol import Protocol
from trialmgr.domain.vocab import Role
from trialmgr.keys import audit_public_keys
from trialmgr.services import audit_query, integrity_status, trials
from trialmgr.state import state
from trialmgr.web.access import allow
from trialmgr.web.db import read_session, transaction

bp = Blueprint("monitor", __name__, url_prefix="/t/<trial>/audit")
AUDIT_READERS = (Role.MONITOR, Role.INVESTIGATOR, Role.ADMIN)


def _filters() -> tuple[audit_query.AuditFilter, dict[str, str]]:
    try:
        return audit_query.AuditFilter.parse(request.args), {}
    except ValidationFailed as exc:
        return audit_query.AuditFilter(), exc.errors


@bp.get("/")
@allow(*AUDIT_READERS)
def log(trial: str):
    s = read_session()
    f, errors = _filters()
    before = request.args.get("before", type=int)
    rows, cursor = audit_query.page(s, trial, f, before=before, limit=50)
    blinded = trials.current_protocol(s, trial).is_blinded(g.actor.role.value)
    return render_template("monitor/audit.html", trial_row=trials.get_trial(s, trial), rows=rows, cursor=cursor,
                           filters=f.as_args(), raw=request.args, errors=errors,
                           redact=lambda e: audit_query.redact(e, blinded),
                           status=integrity_status.last(s, trial))


@bp.get("/export.csv")
@allow(*AUDIT_READERS)
def export_csv(trial: str):
    s = read_session()
    f, errors = _filters()
    if errors:
        return Response("; ".join(f"{k}: {v}" for k, v in errors.items()), status=422, mimetype="text/plain")
    blinded = trials.current_protocol(s, trial).is_blinded(g.actor.role.value)
    body = stream_with_context(audit_query.csv_rows(s, trial, f, blinded=blinded))
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{trial}-audit.csv"'})


@bp.get("/history")
@allow(*AUDIT_READERS)
def history(trial: str):
    s = read_session()
    participant = request.args.get("participant", "")
    entity = request.args.get("entity", "")
    field = request.args.get("field", "")
    proto = trials.current_protocol(s, trial)
    blinded = proto.is_blinded(g.actor.role.value)
    rows = audit_query.field_history(s, trial, participant, entity, field)
    return render_template("monitor/history.html", trial_row=trials.get_trial(s, trial), rows=rows,
                           participant=participant, entity=entity, field=field,
                           **_history_record(proto, trial, participant, entity, field),
                           redact=lambda e: audit_query.redact(e, blinded))


def _history_record(proto: Protocol, trial: str, participant: str, entity: str, field: str) -> dict:
    """The value's name in words (its label on the form), the record it belongs to and the page it was opened
    from. The audit trail names a form record "{visit}/{form}" or "#{instance}/{form}" (services.crf.entity_id)
    and the participant record by the participant's code."""
    if entity == participant:
        return {"label": field, "record": "the participant record",
                "back": (url_for("enrollment.participant", trial=trial, code=participant),
                         f"Back to participant {participant}")}
    where, _, form_id = entity.partition("/")
    form = next((f for f in proto.forms if f.id == form_id), None)
    if form is None or not where:
        return {"label": field, "record": entity, "back": None}
    labels = {x.id: x.label for x in (*form.fields, *form.derived)}
    if where.startswith("#"):
        record = f"{form.title} {where}"
        url = url_for("crf.anytime_form", trial=trial, code=participant, form=form.id, instance=int(where[1:])) \
            if where[1:].isdigit() else None
    else:
        record = f"{form.title} at visit {where}"
        url = url_for("crf.visit_form", trial=trial, code=participant, visit=where, form=form.id)
    return {"label": labels.get(field, field), "record": f"{record}, field {field}",
            "back": (f"{url}#{field}", f"Back to {form.title}") if url else None}


@bp.post("/verify")
@allow(*AUDIT_READERS)
def verify(trial: str):
    with transaction() as s:
        result = integrity_status.run(s, g.actor, audit_public_keys(state().settings), trial)
    if result["ok"]:
        flash(f"Audit trail verified: {result['entries']} entries, {result['checkpoints']} signed checkpoints.",
              "info")
    else:
        flash("Audit trail integrity is BROKEN: " + (result["problem"]["message"] if result["problem"]
                                                     else result["data_mismatches"][0]), "error")
    return redirect(url_for("monitor.log", trial=trial))
