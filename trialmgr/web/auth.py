"""Sign in, sign out and choosing which of one's trial roles to act in."""

from __future__ import annotations

import time

from flask import Blueprint, abort, flash, g, redirect, render_template, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy.orm import selectinload
from wtforms import PasswordField, StringField
from wtforms.validators import InputRequired, Length

from trialmgr import keys
from trialmgr.db.models_accounts import User
from trialmgr.services import accounts, twofactor
from trialmgr.services.context import Actor
from trialmgr.state import state
from trialmgr.web.access import AUTHENTICATED, PUBLIC, allow, current_identity
from trialmgr.web.db import read_session, transaction

bp = Blueprint("auth", __name__)


class LoginUser(UserMixin):
    def __init__(self, user: User) -> None:
        self.user = user
        self.id = str(user.id)


def init_login(manager: LoginManager) -> None:
    @manager.user_loader
    def _load(user_id: str):
        if not user_id.isdigit():
            return None
        user = read_session().get(User, int(user_id), options=[selectinload(User.roles)])
        return LoginUser(user) if user is not None and user.active else None


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[InputRequired(message="Enter your user name."),
                                                    Length(max=64)])
    password = PasswordField("Password", validators=[InputRequired(message="Enter your password."),
                                                     Length(max=256)])


def _safe_next(target: str | None) -> str | None:
    # Only local paths: an open redirect after login is a phishing aid.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@bp.route("/login", methods=["GET", "POST"])
@allow(PUBLIC)
def login():
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        st = state()
        with transaction() as s:
            user = accounts.authenticate(
                s, st.hasher, form.username.data, form.password.data,
                max_failures=st.settings.login_max_failures,
                lockout_minutes=st.settings.login_lockout_minutes,
                client_addr=request.remote_addr, request_id=g.request_id)
            user_id = user.id if user else None
        if user_id is None:
            error = accounts.LOGIN_FAILED
        else:
            user = read_session().get(User, user_id, options=[selectinload(User.roles)])
            next_url = _safe_next(request.args.get("next"))
            if user.totp_secret:
                # Not signed in yet: only the signed session cookie remembers who passed the first step.
                session.clear()
                session[PENDING] = {"user_id": user.id, "since": time.time(), "next": next_url}
                return redirect(url_for("auth.login_code"))
            return _sign_in(user, next_url)
    status = 401 if error else 200
    return render_template("auth/login.html", form=form, error=error), status


PENDING = "totp_pending"
PENDING_SECONDS = 300


def _sign_in(user: User, next_url: str | None):
    session.clear()
    session.permanent = True
    login_user(LoginUser(user))
    ms = accounts.memberships(user)
    if ms:
        session["active"] = {"trial": ms[0].trial, "role": ms[0].role.value}
    return redirect(next_url or url_for("home.index"))


class CodeForm(FlaskForm):
    code = StringField("Authenticator code", validators=[InputRequired(message="Enter the 6-digit code."),
                                                         Length(max=16)],
                       description="The 6-digit code your authenticator app shows for trialmgr now.")


@bp.route("/login/code", methods=["GET", "POST"])
@allow(PUBLIC)
def login_code():
    """The second step of signing in, for accounts with two-factor authentication."""
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    pending = session.get(PENDING)
    if not pending or time.time() - float(pending.get("since", 0)) > PENDING_SECONDS:
        session.pop(PENDING, None)
        flash("Please sign in again.", "info")
        return redirect(url_for("auth.login"))
    form = CodeForm()
    error = None
    if form.validate_on_submit():
        st = state()
        with transaction() as s:
            user = twofactor.verify_login(
                s, int(pending["user_id"]), form.code.data, key=keys.credentials_key(st.settings),
                max_failures=st.settings.login_max_failures,
                lockout_minutes=st.settings.login_lockout_minutes, client_addr=request.remote_addr,
                request_id=g.request_id)
            user_id = user.id if user else None
        if user_id is not None:
            return _sign_in(read_session().get(User, user_id, options=[selectinload(User.roles)]),
                            pending.get("next"))
        error = "That code is not right, or was already used. Wait for the next code and try again."
    status = 401 if error else 200
    return render_template("auth/code.html", form=form, error=error), status


@bp.route("/logout", methods=["POST"])
@allow(AUTHENTICATED)
def logout():
    actor: Actor = g.actor
    with transaction() as s:
        accounts.record_logout(s, actor)
    logout_user()
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/roles", methods=["GET", "POST"])
@allow(AUTHENTICATED)
def roles():
    ident = current_identity()
    if request.method == "POST":
        trial, role = request.form.get("trial", ""), request.form.get("role", "")
        if not any(m.trial == trial and m.role.value == role for m in ident.memberships):
            abort(403)
        session["active"] = {"trial": trial, "role": role}
        return redirect(url_for("home.index"))
    return render_template("auth/roles.html", memberships=ident.memberships)
