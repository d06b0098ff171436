"""For every blinded role, every page, API response, CSV, SVG and error message it can reach contains no arm
code, arm label or allocation detail, checked against the protocol's actual arm strings."""

from __future__ import annotations

import pytest

from tests.security.test_authorization_matrix import _call, _routes, _url
from trialmgr.domain.vocab import Role
from trialmgr.protocols import default_protocol_path, load_protocol_file

T = "hip-pt-clbp"
PROTO = load_protocol_file(default_protocol_path())
SECRETS = [a.code for a in PROTO.arms] + [a.label for a in PROTO.arms]
BLINDED = [Role(r) for r in sorted(PROTO.blinded_roles)]


def _leaks(text: str) -> list[str]:
    # Arm codes are matched as whole tokens (HIP must not match "hip_pain"), labels anywhere.
    import re

    found = [s for s in SECRETS if " " in s and s in text]
    found += [c for c in (a.code for a in PROTO.arms) if re.search(rf"(?<![A-Za-z_]){re.escape(c)}(?![A-Za-z_])", text)]
    return found


@pytest.fixture
def trial_in_progress(app, db, actor, settings, randomized, make_user):
    from trialmgr.services import crf, enrollment, queries, randomization

    codes = [randomized("DE", "F"), randomized("DE", "M")]
    with db.session() as s:
        for code in codes:
            p = enrollment.get_participant(s, actor, T, code)
            rec = crf.save_form(s, actor, p, "pain", {"back_pain": "5", "hip_pain": "2"}, visit_code="BL").record
            queries.open_query(s, actor, p, rec, "back_pain", "Please confirm.")
            crf.save_form(s, actor, p, "adverse_event", {
                "term": "Knee pain", "onset_date": enrollment.today().isoformat(), "severity": "mild",
                "serious": "no", "relatedness": "possible", "action_taken": "none", "outcome": "recovering"})
    make_user("ines", f"{T}:investigator")
    with db.session() as s:
        from trialmgr.services import accounts

        inv = accounts.get_user(s, "ines")
        from trialmgr.services.context import Actor

        randomization.unblind(s, Actor(username="ines", role=Role.INVESTIGATOR, trial=T, user_id=inv.id,
                                       full_name=inv.full_name, console=True), None, T, codes[0],
                              reason="serious adverse event", password="")
    return codes


@pytest.mark.parametrize("role", BLINDED, ids=lambda r: r.value)
def test_no_page_or_response_reveals_an_arm(app, db, login, make_user, trial_in_progress, role):
    from trialmgr.services import accounts
    from trialmgr.services.context import cli_actor

    app.config["WTF_CSRF_ENABLED"] = False
    username = f"blind{role.value}"
    make_user(username, f"{T}:{role.value}" + ("@DE" if role.site_bound else ""))
    client = app.test_client()
    login(username, c=client)
    with db.session() as s:
        _, token = accounts.create_token(s, cli_actor(), accounts.get_user(s, username), trial_id=T, role=role.value,
                                         name="leak test")
    code = trial_in_progress[0]
    values = {"trial": T, "code": code, "participant": code, "visit": "BL", "form": "pain", "instance": "1",
              "screening": "1", "query": "1", "job": "0" * 32}
    seen = 0
    for rule, access in _routes(app):
        if "GET" not in rule.methods or not (access.public or role in access.roles() or
                                             "authenticated" in access.who):
            continue
        url = _url(rule, values)
        headers = {"Authorization": f"Bearer {token}"} if rule.rule.startswith("/api/") else None
        resp = _call(client, url, "GET", headers=headers)
        leaks = _leaks(resp.body_text)
        assert not leaks, (role.value, rule.rule, resp.status_code, leaks)
        seen += 1
        # Error pages for records that do not exist must not leak either.
        if "<code>" in rule.rule or "<participant>" in rule.rule:
            bad = _call(client, url.replace(code, "DE-0999"), "GET", headers=headers)
            assert not _leaks(bad.body_text), (role.value, rule.rule, "error page")
    assert seen > 15


def test_the_detector_sees_arms_where_they_are_allowed(app, login, make_user, trial_in_progress):
    """A control: for an unblinded investigator the same check does find the arm on the participant page."""
    make_user("ivan", f"{T}:investigator")
    client = app.test_client()
    login("ivan", c=client)
    page = _call(client, f"/t/{T}/participants/{trial_in_progress[0]}", "GET")
    assert page.status_code == 200 and _leaks(page.body_text)
