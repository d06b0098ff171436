"""Data state (freeze, lock, unlock with an investigator's signature) and dataset export with progress."""

from __future__ import annotations

import json
import re
import threading
import uuid
from pathlib import Path

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, send_file, url_for
from wtforms import BooleanField, PasswordField, StringField, TextAreaField

from trialmgr.domain.errors import DomainError, ValidationFailed
from trialmgr.domain.vocab import DataState, Role
from trialmgr.services import locking, signatures
from trialmgr.state import state
from trialmgr.web.access import allow
from trialmgr.web.db import read_session, transaction
from trialmgr.web.enrollment import domain_error_page, page_context
from trialmgr.web.forms import PageForm

bp = Blueprint("data", __name__, url_prefix="/t/<trial>/data")
bp.register_error_handler(DomainError, domain_error_page)
JOB_RE = re.compile(r"^[0-9a-f]{32}$")
ACTIONS = {DataState.OPEN: ["freeze", "lock"], DataState.FROZEN: ["unfreeze", "lock"], DataState.LOCKED: ["unlock"]}


class StateForm(PageForm):
    action = StringField("Action")  # the choices depend on the state; the service refuses anything else
    reason = TextAreaField("Reason", render_kw={"maxlength": 1000},
                           description="Required to unfreeze or unlock; recorded with your signature.")
    password = PasswordField("Your password", render_kw={"autocomplete": "current-password"},
                             description="Re-entering your password signs this change (21 CFR 11.200).")


class ExportForm(PageForm):
    blinded = BooleanField("Blinded: arms as neutral letters, no allocation detail")
    deidentified = BooleanField("De-identified: drop direct identifiers, shift dates per participant")


def _exports_dir() -> Path:
    path = state().settings.instance_path / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _page(trial: str, form: StateForm | None = None, status: int = 200):
    s = read_session()
    ctx = page_context(trial)
    return render_template(
        "data/index.html", form=form or StateForm(formdata=None), export_form=ExportForm(formdata=None),
        actions=ACTIONS[ctx["trial_row"].data_state], signatures=signatures.for_record(s, trial, "trial"),
        describe=signatures.describe, jobs=_jobs(trial), **ctx), status


@bp.get("/")
@allow(Role.INVESTIGATOR, Role.ADMIN, Role.MONITOR)
def index(trial: str):
    return _page(trial)


@bp.post("/state")
@allow(Role.INVESTIGATOR)
def change_state(trial: str):
    form = StateForm()
    if not form.validate_on_submit():
        return _page(trial, form, 400)
    if form.action.data not in locking.TRANSITIONS:
        offered = ACTIONS[page_context(trial)["trial_row"].data_state]  # what the select offered
        form.apply_errors({"action": f"must be chosen: {' or '.join(offered)}" if not form.action.data
                           else f"is not one of {', '.join(offered)}"})
        return _page(trial, form, 422)
    try:
        with transaction() as s:
            row, sig = locking.change_state(s, g.actor, state().hasher, state().settings, trial, form.action.data,
                                            password=form.password.data or "", reason=form.reason.data)
            message = f"The data are now {row.data_state.value}. {signatures.describe(sig)}"
    except ValidationFailed as exc:
        form.apply_errors(exc.errors)
        return _page(trial, form, 422)
    flash(message, "info")
    return redirect(url_for("data.index", trial=trial))


def _jobs(trial: str) -> list[dict]:
    out = []
    for meta in sorted(_exports_dir().glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[:10]:
        info = json.loads(meta.read_text())
        if info.get("trial") == trial:
            out.append(info)
    return out


def _run_export(app, job: str, trial: str, actor, blinded: bool, deidentified: bool) -> None:
    """Build the bundle in the background, writing progress next to it so any worker can report it."""
    from trialmgr.export import bundle

    folder = app.extensions["trialmgr"].settings.instance_path / "exports"
    meta_path = folder / f"{job}.json"
    info = json.loads(meta_path.read_text())

    def save(**changes) -> None:
        info.update(changes)
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(meta_path)

    def progress(stage: str, done: int, total: int) -> None:
        save(stage=stage, pct=int(100 * done / max(total, 1)))

    with app.app_context():
        try:
            with app.extensions["trialmgr"].db.session() as s:
                manifest = bundle.build(s, actor, app.extensions["trialmgr"].settings, trial, folder / f"{job}.zip",
                                        blinded=blinded, deidentified=deidentified, progress=progress)
            save(state="done", pct=100, kind=manifest["kind"])
        except Exception as exc:  # noqa: BLE001  (reported on the progress page; nothing half-written is offered)
            (folder / f"{job}.zip").unlink(missing_ok=True)
            save(state="failed", message=str(exc)[:500])


@bp.post("/export")
@allow(Role.INVESTIGATOR)
def export(trial: str):
    form = ExportForm()
    if not form.validate_on_submit():
        return _page(trial, status=400)
    kind = "locked" if page_context(trial)["trial_row"].data_state is DataState.LOCKED else "interim"
    job = uuid.uuid4().hex
    name = f"{trial}-{kind}" + ("-blinded" if form.blinded.data else "") + (
        "-deidentified" if form.deidentified.data else "") + ".zip"
    info = {"job": job, "trial": trial, "user": g.actor.username, "state": "running", "pct": 0, "stage": "starting",
            "kind": kind, "name": name}
    (_exports_dir() / f"{job}.json").write_text(json.dumps(info))
    worker = threading.Thread(target=_run_export, daemon=True, name=f"export-{job[:8]}",
                              args=(current_app._get_current_object(), job, trial, g.actor, form.blinded.data,
                                    form.deidentified.data))
    worker.start()
    if current_app.testing:
        worker.join(timeout=120)  # tests read the finished job at once
    return redirect(url_for("data.job", trial=trial, job=job))


def _job_info(trial: str, job: str) -> dict:
    if not JOB_RE.match(job):
        abort(404)
    meta = _exports_dir() / f"{job}.json"
    if not meta.exists():
        abort(404)
    info = json.loads(meta.read_text())
    if info.get("trial") != trial or info.get("user") != g.actor.username:
        abort(404)
    return info


@bp.get("/export/<job>")
@allow(Role.INVESTIGATOR)
def job(trial: str, job: str):
    info = _job_info(trial, job)
    return render_template("data/job.html", info=info, refresh=info["state"] == "running", **page_context(trial))


@bp.get("/export/<job>/download")
@allow(Role.INVESTIGATOR)
def download(trial: str, job: str):
    info = _job_info(trial, job)
    path = _exports_dir() / f"{job}.zip"
    if info["state"] != "done" or not path.exists():
        abort(404)
    return send_file(path, mimetype="application/zip", as_attachment=True, download_name=info["name"])


@bp.get("/export/<job>/status")
@allow(Role.INVESTIGATOR)
def job_status(trial: str, job: str):
    info = _job_info(trial, job)
    return {k: info.get(k) for k in ("state", "pct", "stage", "kind", "name", "message")}


