"""Monitor's audit views: filtered log with keyset paging, per-field history, CSV, integrity status."""

from __future__ import annotations

from flask import Blueprint, Response, flash, g, redirect, render_template, request, stream_with_context, url_for

from trialmgr.domain.errors import ValidationFailed
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
    blinded = trials.current_protocol(s, trial).is_blinded(g.actor.role.value)
    rows = audit_query.field_history(s, trial, participant, entity, field)
    return render_template("monitor/history.html", trial_row=trials.get_trial(s, trial), rows=rows,
                           participant=participant, entity=entity, field=field,
                           redact=lambda e: audit_query.redact(e, blinded))


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
