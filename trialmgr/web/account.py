"""The signed-in user's own account: two-factor enrolment and password change.

Users whose role (in any trial) is listed in the `require_totp_roles` setting are sent to the enrolment page
by every other page until they have enrolled; only signing out stays open to them.
"""

from __future__ import annotations

import segno
from flask import Blueprint, Flask, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user, logout_user
from markupsafe import Markup
from wtforms import PasswordField, StringField
from wtforms.validators import InputRequired, Length

from trialmgr import keys
from trialmgr.db.models_accounts import User
from trialmgr.domain.errors import Conflict, ValidationFailed
from trialmgr.services import accounts, twofactor
from trialmgr.state import state
from trialmgr.web.access import AUTHENTICATED, allow
from trialmgr.web.db import read_session, transaction
from trialmgr.web.forms import PageForm

bp = Blueprint("account", __name__, url_prefix="/account")

ENROL_SECRET = "totp_enrol_secret"
# What an unenrolled user who must enrol may still reach.
OPEN_WHILE_ENROLLING = frozenset({"account.two_factor", "auth.logout", "static", "ops.healthz"})


class EnrolForm(PageForm):
    code = StringField("Code from your app", validators=[InputRequired(message="Enter the 6-digit code."),
                                                         Length(max=16)],
                       description="Add the key to your authenticator app, then type the 6-digit code it shows.")


class PasswordForm(PageForm):
    current = PasswordField("Current password", validators=[InputRequired(message="Enter your current password."),
                                                            Length(max=256)])
    password = PasswordField("New password", validators=[InputRequired(message="Enter a new password."),
                                                         Length(max=256)],
                             description="At least 12 characters; not a common password, not your user name.")
    confirm = PasswordField("New password again", validators=[InputRequired(message="Type the new password again."),
                                                              Length(max=256)])


def _me() -> User:
    return read_session().get(User, g.actor.user_id)


@bp.route("/two-factor", methods=["GET", "POST"])
@allow(AUTHENTICATED)
def two_factor():
    user = _me()
    if user.totp_secret:
        return render_template("account/two_factor.html", enrolled=True, form=None)
    form = EnrolForm()
    key = keys.credentials_key(state().settings)
    pending = session.get(ENROL_SECRET)
    # (None when it does not open: another account's, another key's, or from before it was sealed)
    secret = twofactor.unseal(key, user.id, pending) if isinstance(pending, str) and twofactor.is_sealed(pending) \
        else None
    status = 200
    if request.method == "POST" and secret:
        if form.validate():
            try:
                with transaction() as s:
                    twofactor.enrol(s, g.actor, s.get(User, user.id), secret, form.code.data, key)
            except ValidationFailed as exc:
                form.apply_errors(exc.errors)
            except Conflict as exc:
                form.add_error(exc.message)
            else:
                session.pop(ENROL_SECRET, None)
                flash("Two-factor authentication is on. You will be asked for a code each time you sign in.",
                      "info")
                return redirect(url_for("home.index"))
        status = 422
    if not secret:
        # Kept in the session cookie until confirmed, sealed as the database keeps it (AES-GCM under the
        # credentials key, bound to the user's id): the cookie is signed, not encrypted, and a copy of it (a
        # proxy's log, a shared machine) must not give away the secret. The database holds a secret only once
        # the user has proved their app has it.
        secret = twofactor.new_secret()
        session[ENROL_SECRET] = twofactor.seal(key, user.id, secret)
        if request.method == "POST":
            form.add_error("The key below is new: add it to your app and type its code.")
            status = 422
    must = twofactor.required(user, state().settings.require_totp_roles)
    uri = twofactor.provisioning_uri(secret, user.username)
    return render_template("account/two_factor.html", enrolled=False, form=form, secret=secret, must=must,
                           uri=uri, qr=qr_svg(uri)), status


def qr_svg(text: str) -> Markup:
    """`text` as a QR code, an inline SVG image with a title (segno writes only paths; nothing of `text` is
    echoed as markup)."""
    code = segno.make(text, error="m")
    return Markup(code.svg_inline(scale=4, border=4, dark="#000", light="#fff",  # noqa: S704
                                  title="QR code of the set-up address, for your authenticator app"))


@bp.route("/password", methods=["GET", "POST"])
@allow(AUTHENTICATED)
def password():
    form = PasswordForm()
    status = 200
    if request.method == "POST":
        status = 422
        if form.validate():
            if form.password.data != form.confirm.data:
                form.confirm.errors = [*form.confirm.errors, "The two new passwords are not the same."]
            else:
                st = state()
                try:
                    with transaction() as s:
                        ok = accounts.change_own_password(
                            s, g.actor, st.hasher, s.get(User, g.actor.user_id), form.current.data,
                            form.password.data, max_failures=st.settings.login_max_failures,
                            lockout_minutes=st.settings.login_lockout_minutes)
                        locked = accounts.is_locked(s.get(User, g.actor.user_id))
                except ValidationFailed as exc:
                    form.apply_errors(exc.errors)
                else:
                    if ok:
                        flash("Your password has been changed.", "info")
                        return redirect(url_for("home.index"))
                    if locked:
                        # Too many wrong guesses: whoever is at this keyboard may not be the account's owner.
                        logout_user()
                        session.clear()
                        flash("Too many wrong passwords: the account is locked for a while.", "error")
                        return redirect(url_for("auth.login"))
                    form.current.errors = [*form.current.errors, "Current password is not right."]
    return render_template("account/password.html", form=form), status


def init_app(app: Flask) -> None:
    @app.before_request
    def _require_enrolment():
        if request.blueprint == "api" or request.endpoint in OPEN_WHILE_ENROLLING or request.endpoint is None:
            return None
        roles = state().settings.require_totp_roles
        if not roles or not current_user.is_authenticated:
            return None
        user = current_user.user
        if user.totp_secret or not twofactor.required(user, roles):
            return None
        if request.method == "GET":
            flash("Your role requires two-factor authentication: set it up to continue.", "info")
        return redirect(url_for("account.two_factor"))
