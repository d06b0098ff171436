"""Administration pages: accounts, roles in this trial, and API tokens. Every change goes through
services/accounts.py (or services/twofactor.py), which writes its audit entry in the same transaction.

Accounts are shared between trials. An administrator grants and revokes roles and tokens in their own trial
only, and resets, deactivates or reactivates an account only when every role it holds is in a trial they
administer (accounts.manageable_by): otherwise one trial's admin could take over another trial's staff.
Accounts are never deleted. An administrator does not use these pages on their own account.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length, Optional

from trialmgr.db.base import utcnow
from trialmgr.db.models_accounts import User
from trialmgr.domain.errors import Conflict, DomainError, ReasonRequired, ValidationFailed
from trialmgr.domain.vocab import Role
from trialmgr.services import accounts, trials, twofactor
from trialmgr.state import state
from trialmgr.web.access import allow, current_identity
from trialmgr.web.db import read_session, transaction
from trialmgr.web.enrollment import domain_error_page
from trialmgr.web.forms import PageForm, option

bp = Blueprint("admin", __name__, url_prefix="/t/<trial>/admin")
bp.register_error_handler(DomainError, domain_error_page)

POLICY_HINT = "At least 12 characters; not a common password, not the user name."


def _role_choices() -> list:
    return [option("", "— choose —"), *(option(r.value, r.value) for r in Role)]


def _site_choices(trial: str) -> list:
    return [option("", "— none (admin, investigator, monitor) —"),
            *(option(s.code, f"{s.code} — {s.name}") for s in trials.sites(read_session(), trial))]


class GrantForm(PageForm):
    role = SelectField("Role", validate_choice=False, validators=[InputRequired(message="Choose a role.")])
    site = SelectField("Site", validate_choice=False,
                       description="Coordinators and outcome assessors belong to one site; other roles to none.")

    def fill_choices(self, trial: str) -> GrantForm:
        self.role.choices = _role_choices()
        self.site.choices = _site_choices(trial)
        return self


class CreateUserForm(GrantForm):
    username = StringField("User name", validators=[InputRequired(message="Enter a user name."), Length(max=64)],
                           description="3-64 characters: lower-case letters, digits, '.', '_' or '-'.")
    full_name = StringField("Printed name", validators=[InputRequired(message="Enter the printed name."),
                                                        Length(max=200)],
                            description="Shown with the user's electronic signatures.")
    email = StringField("E-mail (optional)", validators=[Optional(), Length(max=200)])
    password = PasswordField("Password", validators=[InputRequired(message="Enter a password."), Length(max=256)],
                             description=POLICY_HINT)
    confirm = PasswordField("Password again", validators=[InputRequired(message="Type the password again."),
                                                          Length(max=256)])


class ReasonForm(PageForm):
    reason = TextAreaField("Reason", validators=[InputRequired(message="Give a reason: it goes into the audit trail."),
                                                 Length(max=500)], render_kw={"maxlength": 500})


class ResetPasswordForm(PageForm):
    password = PasswordField("New password", validators=[InputRequired(message="Enter a new password."),
                                                         Length(max=256)], description=POLICY_HINT)
    confirm = PasswordField("New password again", validators=[InputRequired(message="Type the password again."),
                                                              Length(max=256)])


class TokenForm(PageForm):
    username = SelectField("User", validate_choice=False, validators=[InputRequired(message="Choose a user.")])
    role = SelectField("Role", validate_choice=False, validators=[InputRequired(message="Choose a role.")],
                       description="The token acts in this trial with this one role, which the user must hold.")
    name = StringField("What it is for", validators=[InputRequired(message="Say what the token is for."),
                                                     Length(max=100)])
    days = StringField("Valid for (days)", default="90", validators=[InputRequired(message="Enter a number of days."),
                                                                     Length(max=4)],
                       description="1 to 366.")


class RevokeTokenForm(PageForm):
    reason = TextAreaField("Reason (optional)", validators=[Optional(), Length(max=500)],
                           render_kw={"maxlength": 500})


def _admin_trials() -> frozenset[str]:
    return frozenset(m.trial for m in current_identity().memberships if m.role is Role.ADMIN)


def _user(username: str) -> User:
    return accounts.get_user(read_session(), username)


def _require_other(user: User) -> None:
    if user.id == g.actor.user_id:
        abort(403)


def _require_manageable(user: User) -> None:
    _require_other(user)
    if not accounts.manageable_by(user, _admin_trials()):
        abort(403)


def _confirm(form: PageForm) -> bool:
    if form.password.data != form.confirm.data:
        form.confirm.errors = [*form.confirm.errors, "The two passwords are not the same."]
        return False
    return True


def _refused(form: PageForm, exc: DomainError) -> None:
    form.add_error(exc.message[:1].upper() + exc.message[1:].rstrip(".") + ".")


# -- users ---------------------------------------------------------------------------------------------


def _users_page(trial: str, form: CreateUserForm | None = None, status: int = 200):
    s = read_session()
    users = s.scalars(select(User).options(selectinload(User.roles)).order_by(User.username)).all()
    form = form or CreateUserForm(formdata=None)
    return render_template("admin/users.html", users=users, form=form.fill_choices(trial),
                           trial_row=trials.get_trial(s, trial), locked=accounts.is_locked), status


@bp.get("/users")
@allow(Role.ADMIN)
def users(trial: str):
    return _users_page(trial)


@bp.post("/users")
@allow(Role.ADMIN)
def create_user(trial: str):
    form = CreateUserForm().fill_choices(trial)
    if not form.validate() or not _confirm(form):
        return _users_page(trial, form, 422)
    st = state()
    try:
        with transaction() as s:
            user = accounts.create_user(s, g.actor, st.hasher, username=form.username.data,
                                        full_name=form.full_name.data, password=form.password.data,
                                        email=(form.email.data or "").strip() or None)
            accounts.grant_role(s, g.actor, user, trial, form.role.data, form.site.data or None)
            username = user.username
    except ValidationFailed as exc:
        form.apply_errors(exc.errors, aliases={"trial": "role"})
        return _users_page(trial, form, 422)
    flash(f"User {username} created.", "info")
    return redirect(url_for(".user", trial=trial, username=username))


def _user_page(trial: str, username: str, status: int = 200, **forms):
    s = read_session()
    user = accounts.get_user(s, username)
    here = [ra for ra in user.roles if ra.trial_id == trial]
    elsewhere = sorted({ra.trial_id for ra in user.roles if ra.trial_id != trial})
    tokens = [t for t in accounts.trial_tokens(s, trial) if t.user_id == user.id]
    revoke = forms.pop("revoke", {})
    ctx = {
        "grant": forms.get("grant") or GrantForm(formdata=None, prefix="grant"),
        "active_form": forms.get("active_form") or ReasonForm(formdata=None, prefix="active"),
        "reset": forms.get("reset") or ResetPasswordForm(formdata=None, prefix="reset"),
        "totp_form": forms.get("totp_form") or ReasonForm(formdata=None, prefix="totp"),
        "revoke": {ra.id: revoke.get(ra.id) or ReasonForm(formdata=None, prefix=f"revoke{ra.id}") for ra in here},
    }
    ctx["grant"].fill_choices(trial)
    return render_template("admin/user.html", user=user, here=here, elsewhere=elsewhere, tokens=tokens,
                           is_self=user.id == g.actor.user_id, manageable=accounts.manageable_by(user, _admin_trials()),
                           locked=accounts.is_locked(user), trial_row=trials.get_trial(s, trial), **ctx), status


@bp.get("/users/<username>")
@allow(Role.ADMIN)
def user(trial: str, username: str):
    return _user_page(trial, username)


@bp.post("/users/<username>/roles")
@allow(Role.ADMIN)
def grant(trial: str, username: str):
    _user(username)
    form = GrantForm(prefix="grant").fill_choices(trial)
    if form.validate():
        try:
            with transaction() as s:
                accounts.grant_role(s, g.actor, accounts.get_user(s, username), trial, form.role.data,
                                    form.site.data or None)
        except ValidationFailed as exc:
            form.apply_errors({k: v for k, v in exc.errors.items()},
                              aliases={"role": form.role.name, "site": form.site.name, "trial": form.role.name})
        else:
            flash(f"Role {form.role.data} granted to {username}.", "info")
            return redirect(url_for(".user", trial=trial, username=username))
    return _user_page(trial, username, 422, grant=form)


@bp.post("/users/<username>/roles/<int:assignment_id>/revoke")
@allow(Role.ADMIN)
def revoke(trial: str, username: str, assignment_id: int):
    target = _user(username)
    ra = accounts.get_assignment(read_session(), trial, assignment_id)
    if ra.user_id != target.id:
        abort(404)
    if target.id == g.actor.user_id and ra.role is Role.ADMIN:
        abort(403)  # an administrator cannot lock themselves out; another admin can
    form = ReasonForm(prefix=f"revoke{assignment_id}")
    if form.validate():
        with transaction() as s:
            accounts.revoke_role(s, g.actor, accounts.get_assignment(s, trial, assignment_id), form.reason.data)
        flash(f"Role {ra.role.value} revoked from {username}.", "info")
        return redirect(url_for(".user", trial=trial, username=username))
    return _user_page(trial, username, 422, revoke={assignment_id: form})


def _set_active(trial: str, username: str, active: bool):
    target = _user(username)
    _require_manageable(target)
    form = ReasonForm(prefix="active")
    if form.validate():
        try:
            with transaction() as s:
                accounts.set_active(s, g.actor, accounts.get_user(s, username), active, form.reason.data)
        except ReasonRequired as exc:
            form.apply_errors({"reason": exc.message}, aliases={"reason": form.reason.name})
        else:
            flash(f"{username} {'reactivated' if active else 'deactivated'}.", "info")
            return redirect(url_for(".user", trial=trial, username=username))
    return _user_page(trial, username, 422, active_form=form)


@bp.post("/users/<username>/deactivate")
@allow(Role.ADMIN)
def deactivate(trial: str, username: str):
    return _set_active(trial, username, False)


@bp.post("/users/<username>/reactivate")
@allow(Role.ADMIN)
def reactivate(trial: str, username: str):
    return _set_active(trial, username, True)


@bp.post("/users/<username>/password")
@allow(Role.ADMIN)
def reset_password(trial: str, username: str):
    target = _user(username)
    _require_manageable(target)
    form = ResetPasswordForm(prefix="reset")
    if form.validate() and _confirm(form):
        try:
            with transaction() as s:
                accounts.set_password(s, g.actor, state().hasher, accounts.get_user(s, username), form.password.data)
        except ValidationFailed as exc:
            form.apply_errors(exc.errors, aliases={"password": form.password.name})
        else:
            flash(f"Password reset for {username}; any lockout is cleared. Tell them the new password "
                  "in person or by telephone, not by e-mail.", "info")
            return redirect(url_for(".user", trial=trial, username=username))
    return _user_page(trial, username, 422, reset=form)


@bp.post("/users/<username>/two-factor/reset")
@allow(Role.ADMIN)
def reset_two_factor(trial: str, username: str):
    target = _user(username)
    _require_manageable(target)
    form = ReasonForm(prefix="totp")
    if form.validate():
        try:
            with transaction() as s:
                twofactor.reset(s, g.actor, accounts.get_user(s, username), form.reason.data)
        except Conflict as exc:
            _refused(form, exc)
        else:
            flash(f"Two-factor authentication reset for {username}.", "info")
            return redirect(url_for(".user", trial=trial, username=username))
    return _user_page(trial, username, 422, totp_form=form)


# -- API tokens ----------------------------------------------------------------------------------------


def _token_form(trial: str, form: TokenForm | None = None) -> TokenForm:
    form = form or TokenForm(formdata=None)
    s = read_session()
    holders = s.scalars(select(User).where(User.active.is_(True), User.roles.any(trial_id=trial))
                        .order_by(User.username)).all()
    form.username.choices = [option("", "— choose —"), *(option(u.username, f"{u.username} ({u.full_name})")
                                                         for u in holders)]
    form.role.choices = _role_choices()
    return form


def _tokens_page(trial: str, form: TokenForm | None = None, status: int = 200, created: dict | None = None):
    s = read_session()
    return render_template("admin/tokens.html", tokens=accounts.trial_tokens(s, trial), form=_token_form(trial, form),
                           revoke_form=RevokeTokenForm(formdata=None), created=created, now=utcnow(),
                           trial_row=trials.get_trial(s, trial)), status


@bp.get("/tokens")
@allow(Role.ADMIN)
def tokens(trial: str):
    return _tokens_page(trial)


@bp.post("/tokens")
@allow(Role.ADMIN)
def create_token(trial: str):
    form = _token_form(trial, TokenForm())
    if not form.validate():
        return _tokens_page(trial, form, 422)
    days_text = (form.days.data or "").strip()
    if not (days_text.isascii() and days_text.isdigit()):
        form.days.errors = [*form.days.errors, "Valid for (days) must be a whole number from 1 to 366."]
        return _tokens_page(trial, form, 422)
    try:
        with transaction() as s:
            owner = s.scalar(select(User).where(User.username == form.username.data))
            if owner is None:
                raise ValidationFailed({"username": "is not a user of this trial"})
            token, plaintext = accounts.create_token(s, g.actor, owner, trial_id=trial, role=form.role.data,
                                                     name=form.name.data, days=int(days_text))
            created = {"plaintext": plaintext, "prefix": token.prefix, "user": owner.username,
                       "role": token.role.value, "expires_at": token.expires_at}
    except ValidationFailed as exc:
        form.apply_errors(exc.errors)
        return _tokens_page(trial, form, 422)
    # Rendered, never flashed: a flash would travel in the session cookie. Pages are sent with no-store.
    return _tokens_page(trial, created=created)


@bp.post("/tokens/<int:token_id>/revoke")
@allow(Role.ADMIN)
def revoke_token(trial: str, token_id: int):
    token = accounts.get_token(read_session(), trial, token_id)
    form = RevokeTokenForm()
    if not form.validate():
        return _tokens_page(trial, status=422)
    with transaction() as s:
        accounts.revoke_token(s, g.actor, accounts.get_token(s, trial, token_id), (form.reason.data or "").strip()
                              or None)
    flash(f"Token {token.prefix}… revoked.", "info")
    back = request.form.get("back", "")
    if back.startswith(f"/t/{trial}/admin/") and "//" not in back:
        return redirect(back)
    return redirect(url_for(".tokens", trial=trial))
