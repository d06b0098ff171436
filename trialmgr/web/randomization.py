"""Allocation list management, design report, emergency unblinding and its ledger.

The list's content is never shown: per stratum only how many slots are used and left. Balance by arm is
shown only to roles the protocol does not blind.
"""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_wtf.file import FileField
from wtforms import PasswordField, TextAreaField

from trialmgr.domain.errors import DomainError, ValidationFailed
from trialmgr.domain.vocab import Role
from trialmgr.services import enrollment, randomization
from trialmgr.state import state
from trialmgr.web.access import allow
from trialmgr.web.db import read_session, transaction
from trialmgr.web.enrollment import arm_label, blinded, domain_error_page, page_context, protocol
from trialmgr.web.forms import PageForm
from trialmgr.web.reports import design_report_lines

bp = Blueprint("randomization", __name__, url_prefix="/t/<trial>")
bp.register_error_handler(DomainError, domain_error_page)

LIST_MANAGERS = randomization.LIST_MANAGERS
LEDGER_READERS = (Role.INVESTIGATOR, Role.ADMIN)
# Enough simulated trials for a page (about 0.1 s); `trialmgr randomization report` runs the full 10,000.
PAGE_SIMULATIONS = 3000


class ImportForm(PageForm):
    file = FileField("Allocation list (CSV file)",
                     description="Columns: stratum, sequence, arm, block. Every problem in the file is listed.")


class UnblindForm(PageForm):
    reason = TextAreaField("Reason for unblinding", render_kw={"maxlength": 1000},
                           description="Why the treating team must know the arm (e.g. a serious adverse event).")
    password = PasswordField("Your password", render_kw={"autocomplete": "current-password"},
                             description="Re-entering your password signs this unblinding.")


def _index_page(trial: str, *, form: ImportForm | None = None, status: int = 200):
    s = read_session()
    ctx = page_context(trial)
    proto = ctx["protocol"]
    rep = randomization.design_report(s, trial, n_sims=PAGE_SIMULATIONS)
    empty = {"overall": {}, "by_stratum": {}, "by_site": {}}
    # The report's last line is the balance so far, which this page shows as a table (unblinded roles only).
    design_lines = design_report_lines(rep, empty)[:-1]
    bal = None if blinded(proto) else randomization.balance(s, trial)
    lst = randomization.active_list(s, trial)
    return render_template(
        "randomization/index.html", lst=lst, status_rows=randomization.list_status(s, trial),
        alerts=randomization.alerts(s, trial, state().settings.list_low_warning), design_lines=design_lines,
        design=rep["design"], balance=bal, arm_label=lambda c: arm_label(proto, c),
        form=form or ImportForm(formdata=None), **ctx), status


@bp.get("/randomization")
@allow(*LIST_MANAGERS)
def index(trial: str):
    return _index_page(trial)


@bp.route("/randomization/generate", methods=["GET", "POST"])
@allow(*LIST_MANAGERS)
def generate(trial: str):
    if request.method == "GET":
        if randomization.active_list(read_session(), trial) is not None:
            return redirect(url_for(".index", trial=trial))
        return render_template("randomization/generate_confirm.html", **page_context(trial))
    with transaction() as s:
        lst = randomization.generate(s, g.actor, state().settings, trial)
        summary = f"Allocation list {lst.number} generated: {lst.slots_total} slots, sealed at rest."
    flash(summary, "info")
    return redirect(url_for(".index", trial=trial))


@bp.post("/randomization/import")
@allow(*LIST_MANAGERS)
def import_list(trial: str):
    form = ImportForm()
    if form.validate():
        upload = request.files.get("file")
        raw = upload.read() if upload is not None else b""
        try:
            if not raw.strip():
                raise ValidationFailed({"file": "choose a CSV file to import (the file sent was empty)"})
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise ValidationFailed({"file": "is not a UTF-8 text (CSV) file"}) from None
            with transaction() as s:
                lst = randomization.import_list(s, g.actor, state().settings, trial, text)
                summary = f"Allocation list {lst.number} imported: {lst.slots_total} slots, sealed at rest."
        except ValidationFailed as exc:
            for key, message in exc.errors.items():
                lines = [m for m in message.split("\n") if m.strip()]
                if key == "file" and len(lines) > 1:
                    form.file.errors = [*form.file.errors, exc.message[:1].upper() + exc.message[1:] + ":", *lines]
                else:
                    form.apply_errors({key: message})
        else:
            flash(summary, "info")
            return redirect(url_for(".index", trial=trial))
    return _index_page(trial, form=form, status=422)


@bp.route("/unblind/<code>", methods=["GET", "POST"])
@allow(Role.INVESTIGATOR)
def unblind(trial: str, code: str):
    s = read_session()
    p = enrollment.get_participant(s, g.actor, trial, code)
    allocation = randomization.allocation_of(s, p)
    form = UnblindForm()
    if request.method == "POST" and allocation is not None and form.validate():
        try:
            with transaction() as ws:
                arm = randomization.unblind(ws, g.actor, state().hasher, trial, code, reason=form.reason.data or "",
                                           password=form.password.data or "")
        except ValidationFailed as exc:
            form.apply_errors(exc.errors)
        else:
            proto = protocol(trial)
            return render_template("randomization/unblinded.html", p=p, arm_code=arm, arm=arm_label(proto, arm),
                                   reason=(form.reason.data or "").strip(), **page_context(trial))
    form.password.data = ""  # never echo a password back into the page
    status = 422 if form.all_errors else 200
    return render_template("randomization/unblind.html", p=p, form=form, randomized=allocation is not None,
                           **page_context(trial)), status


@bp.get("/unblinding")
@allow(*LEDGER_READERS)
def ledger(trial: str):
    rows = randomization.list_unblindings(read_session(), trial)
    return render_template("randomization/ledger.html", rows=rows, **page_context(trial))

