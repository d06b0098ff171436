"""Every route, as every role, another site's user and nobody: access matches each route's declaration.

Routes are found by walking the URL map, so a route added tomorrow is checked tomorrow; a route without a
declaration stops the app from starting (tests/web/test_auth_pages.py).
"""

from __future__ import annotations

import re

import pytest

from trialmgr.domain.vocab import Role
from trialmgr.web.access import AUTHENTICATED, declared_access

T = "hip-pt-clbp"
ROLE_USERS = {
    Role.ADMIN: ("ada", f"{T}:admin"),
    Role.INVESTIGATOR: ("ivo", f"{T}:investigator"),
    Role.COORDINATOR: ("cody", f"{T}:coordinator@DE"),
    Role.ASSESSOR: ("asa", f"{T}:assessor@DE"),
    Role.MONITOR: ("moe", f"{T}:monitor"),
}


def _url(rule, values: dict[str, str]) -> str:
    def fill(m):
        name = m.group(2)
        return values.get(name, "1" if m.group(1) == "int:" else "x")

    return re.sub(r"<(int:)?(\w+)>", fill, rule.rule)


@pytest.fixture
def world(app, make_user, randomized, db):
    app.config["WTF_CSRF_ENABLED"] = False  # this test is about access; CSRF has its own tests
    code = randomized("DE", "F")
    for username, spec in ROLE_USERS.values():
        make_user(username, spec)
    make_user("pete", f"{T}:coordinator@PA")
    return {"trial": T, "code": code, "participant": code, "visit": "BL", "form": "pain", "instance": "1",
            "screening": "1", "query": "1", "job": "0" * 32,
            # Admin pages act on these: ids nobody has, so walking them as every role changes nothing.
            "username": "no-such-user", "token_id": "999999", "assignment_id": "999999"}


def _call(c, url, method, **kw):
    """One request, its body read and the response closed (streamed responses hold their context)."""
    resp = c.open(url, method=method, **kw)
    resp.body_text = resp.get_data(as_text=True)
    resp.close()
    return resp


def _routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        yield rule, declared_access(app, rule.endpoint)


def _token(db, username, role):
    from trialmgr.services import accounts
    from trialmgr.services.context import cli_actor

    with db.session() as s:
        return accounts.create_token(s, cli_actor(), accounts.get_user(s, username), trial_id=T, role=role,
                                     name="matrix")[1]


def test_every_route_as_every_role_and_anonymous(app, client, login, db, world):
    checked = 0
    clients = {}
    for role, (username, _spec) in ROLE_USERS.items():
        c = app.test_client()
        login(username, c=c)
        clients[role] = (c, {"Authorization": f"Bearer {_token(db, username, role.value)}"})
    anonymous = app.test_client()
    for rule, access in _routes(app):
        assert access is not None, rule.endpoint
        url = _url(rule, world)
        is_api = rule.rule.startswith("/api/")
        methods = sorted(m for m in rule.methods if m in ("GET", "POST", "PUT"))
        for method in methods:
            resp = _call(anonymous, url, method)
            if access.public:
                assert resp.status_code not in (401, 403), (rule.rule, method, "anonymous", resp.status_code)
            else:
                expected = 401 if is_api else 302
                assert resp.status_code == expected, (rule.rule, method, "anonymous", resp.status_code)
            for role, (c, headers) in clients.items():
                if rule.endpoint == "auth.logout":
                    continue  # would end the session the rest of the walk needs; tests/web covers it
                data = {"trial": T, "role": role.value} if rule.endpoint == "auth.roles" else None
                resp = _call(c, url, method, headers=headers if is_api else None, data=data)
                allowed = access.public or AUTHENTICATED in access.who or role in access.roles()
                if allowed:
                    assert resp.status_code not in (401, 403), (rule.rule, method, role.value, resp.status_code,
                                                                resp.body_text[:300])
                else:
                    assert resp.status_code == 403, (rule.rule, method, role.value, resp.status_code)
                checked += 1
    assert checked > 100


def test_another_sites_coordinator_never_reaches_a_participant(app, client, login, db, world):
    login("pete")
    token = _token(db, "pete", "coordinator")

    for rule, access in _routes(app):
        if "code" not in rule.arguments and "participant" not in rule.arguments:
            continue
        if Role.COORDINATOR not in access.roles():
            continue
        url = _url(rule, world)
        headers = {"Authorization": f"Bearer {token}"} if rule.rule.startswith("/api/") else None
        for method in sorted(m for m in rule.methods if m in ("GET", "POST", "PUT")):
            resp = _call(client, url, method, headers=headers)
            assert resp.status_code in (403, 404), (rule.rule, method, resp.status_code)


def test_public_routes_are_few_and_known(app):
    public = sorted(rule.rule for rule, access in _routes(app) if access.public)
    assert set(public) <= {"/", "/login", "/login/code", "/api/v1/openapi.json", "/healthz"}, public
