"""Who may use each route: one declaration per view, enforced here for web pages and the JSON API alike.

Every view function carries `@allow(...)`; the app refuses to start if one does not, so a new route without
a declaration fails the suite. Identities come from the login session (web) or a bearer token (API).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flask import Flask, abort, g, request, session
from flask_login import current_user

from trialmgr.domain.vocab import Role
from trialmgr.services.accounts import Membership, memberships
from trialmgr.services.context import Actor

PUBLIC = "public"
AUTHENTICATED = "authenticated"
ALL_ROLES = tuple(Role)


@dataclass(frozen=True)
class Access:
    who: frozenset[str]

    @property
    def public(self) -> bool:
        return PUBLIC in self.who

    def roles(self) -> frozenset[Role]:
        return frozenset(Role(w) for w in self.who if w not in (PUBLIC, AUTHENTICATED))


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str
    full_name: str
    memberships: tuple[Membership, ...]
    via_token: bool = False


def allow(*who: str | Role) -> Callable:
    """Declare and enforce who may call a view. Views with a `trial` URL argument need a role in that trial."""
    access = Access(frozenset(str(w) for w in who))
    if not access.who:
        raise ValueError("allow() needs at least one role, AUTHENTICATED or PUBLIC")

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not access.public:
                ident = current_identity()
                if ident is None:
                    return _unauthenticated()
                trial = kwargs.get("trial")
                if access.roles():
                    chosen = _choose(ident, trial, access.roles())
                    if chosen is None:
                        abort(403)
                    g.actor = _actor(ident, chosen)
                else:
                    g.actor = _actor(ident, None)
            return view(*args, **kwargs)

        wrapper.__access__ = access  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _unauthenticated():
    if request.blueprint == "api":
        abort(401)
    from flask import redirect, url_for

    return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))


def _choose(ident: Identity, trial: str | None, allowed: Iterable[Role]) -> Membership | None:
    allowed = set(allowed)
    candidates = [m for m in ident.memberships if (trial is None or m.trial == trial) and m.role in allowed]
    if not candidates:
        return None
    if not ident.via_token:
        active = session.get("active") or {}
        for m in candidates:
            if m.trial == active.get("trial") and m.role.value == active.get("role"):
                return m
    return candidates[0]


def _actor(ident: Identity, m: Membership | None) -> Actor:
    return Actor(
        username=ident.username,
        user_id=ident.user_id,
        full_name=ident.full_name,
        role=m.role if m else None,
        trial=m.trial if m else None,
        sites=m.sites if m else (),
        request_id=g.get("request_id", ""),
        client_addr=request.remote_addr,
    )


def current_identity() -> Identity | None:
    if "identity" in g:
        return g.identity
    ident = None
    if request.blueprint != "api" and current_user.is_authenticated:
        user = current_user.user
        ident = Identity(user.id, user.username, user.full_name, tuple(memberships(user)))
    g.identity = ident
    return ident


def check_declarations(app: Flask) -> None:
    missing = [ep for ep, view in app.view_functions.items()
               if ep != "static" and not hasattr(view, "__access__")]
    if missing:
        raise RuntimeError(f"routes without an access declaration (@allow): {', '.join(sorted(missing))}")


def declared_access(app: Flask, endpoint: str) -> Access | None:
    return getattr(app.view_functions[endpoint], "__access__", None)
