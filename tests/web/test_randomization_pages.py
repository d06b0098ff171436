"""Allocation list pages, design report, emergency unblinding and its ledger."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select, update

from tests.support import DEFAULT_PROTOCOL, PASSWORD, csrf_token
from trialmgr.db.models_audit import AuditEntry
from trialmgr.db.models_trial import AllocationList, StratumCursor, Unblinding
from trialmgr.services import randomization

T = "/t/hip-pt-clbp"
STRATA = ["DE|F", "DE|M", "PA|F", "PA|M", "NC|F", "NC|M"]
IMPORT_OK = "stratum,sequence,arm,block\n" + "".join(
    f"{s},{i},{arm},{(i + 1) // 2}\n" for s in STRATA for i, arm in enumerate(["HIP", "SPINE", "SPINE", "HIP"], 1))
XSS = "<script>alert(1)</script>"


def count(db, model) -> int:
    with db.session(write=False) as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.fixture
def investigator(make_user, login, trial):
    make_user("ivan", "hip-pt-clbp:investigator", full_name="Ivan Petrov")
    login("ivan")
    return "ivan"


@pytest.fixture
def randomized(db, actor, settings, trial, allocation_list, enroll):
    code = enroll("DE", "F")
    with db.session() as s:
        arm = randomization.randomize(s, actor, settings, trial, code).allocation.arm
    return code, arm


def upload(client, text: str | bytes, name: str = "list.csv"):
    import io

    data = text.encode() if isinstance(text, str) else text
    return client.post(f"{T}/randomization/import", content_type="multipart/form-data",
                       data={"csrf_token": csrf_token(client, f"{T}/randomization"),
                             "file": (io.BytesIO(data), name)})


# -- list management --------------------------------------------------------------------------------------

def test_generate_the_list_through_the_page(client, investigator, db):
    html = client.get(f"{T}/randomization").get_data(as_text=True)
    assert "There is no allocation list yet" in html and "Generate list" in html and "Import a list" in html
    assert "Selection bias (convergence strategy)" in html  # the design report
    html = client.get(f"{T}/randomization/generate").get_data(as_text=True)
    assert "You are about to generate the allocation list" in html and "cannot be undone" in html
    assert count(db, AllocationList) == 0  # a GET changes nothing
    resp = client.post(f"{T}/randomization/generate",
                       data={"csrf_token": csrf_token(client, f"{T}/randomization/generate")})
    assert resp.status_code == 302
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert re.search(r"Allocation list 1 generated: \d+ slots, sealed at rest.", html)
    for stratum in STRATA:  # at least the slots asked for; each stratum ends at a block end
        m = re.search(rf"<td>{re.escape(stratum)}</td><td>0</td><td>(\d+)</td><td>(\d+)</td>", html)
        assert m and m.group(1) == m.group(2) and int(m.group(1)) >= 100, stratum
    assert "Generate list" not in html and "Import a list" not in html  # one active list: nothing more to offer
    assert client.get(f"{T}/randomization/generate").status_code == 302
    resp = client.post(f"{T}/randomization/generate", data={"csrf_token": csrf_token(client, f"{T}/randomization")})
    assert resp.status_code == 409 and "already has an allocation list" in resp.get_data(as_text=True)
    assert count(db, AllocationList) == 1
    with db.session(write=False) as s:
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "allocation_list:generated")) is not None


def test_the_list_content_is_never_shown(client, investigator, randomized):
    html = client.get(f"{T}/randomization").get_data(as_text=True)
    assert re.search(r"<td>DE\|F</td><td>1</td><td>\d+</td><td>\d+</td>", html)
    # Balance (this role is unblinded) counts assignments; it never lists slots or blocks.
    assert "Balance so far" in html and "block" not in html.split("Balance so far")[1].split("</table>")[0].lower()


def test_import_a_valid_list(client, investigator, db):
    resp = upload(client, IMPORT_OK)
    assert resp.status_code == 302
    html = client.get(f"{T}/randomization").get_data(as_text=True)
    assert "Allocation list 1 imported: 24 slots" in html and "imported (imported)" in html


def test_import_with_an_unbalanced_block_lists_every_error(client, investigator, db):
    bad = IMPORT_OK.replace("DE|F,2,SPINE,1", "DE|F,2,HIP,1").replace("PA|M,3,SPINE", "PA|M,3,PLACEBO")
    resp = upload(client, bad)
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "The list was refused:" in html
    items = re.findall(r"<li>([^<]*)</li>", html.split('class="error import-errors"')[1].split("</ul>")[0])
    assert len(items) >= 2
    assert any("DE|F" in i for i in items) and any("PLACEBO" in i for i in items)
    assert 'aria-invalid="true"' in html
    assert count(db, AllocationList) == 0
    for text, words in [("stratum,arm\nDE|F,HIP\n", "missing column"), ("", "choose a CSV file"),
                        (b"\xff\xfe\x00bad", "not a UTF-8 text")]:
        resp = upload(client, text)
        assert resp.status_code == 422 and words in resp.get_data(as_text=True), words
    assert count(db, AllocationList) == 0


def test_exhausted_and_low_strata_raise_alerts(client, investigator, db, allocation_list):
    with db.session() as s:
        s.execute(update(StratumCursor).where(StratumCursor.stratum == "DE|F").values(next_seq=StratumCursor.total + 1))
        s.execute(update(StratumCursor).where(StratumCursor.stratum == "PA|M").values(next_seq=StratumCursor.total - 1))
    html = client.get(f"{T}/randomization").get_data(as_text=True)
    assert "Stratum DE|F: the allocation list is exhausted; nobody more can be randomized in it." in html
    assert "Stratum PA|M: only 2 allocation slot(s) left." in html
    assert "<td>0 (exhausted)</td>" in html


def test_balance_only_for_unblinded_roles(client, make_user, login, trial, load_trial, randomized, tmp_path):
    make_user("ivan", "hip-pt-clbp:investigator")
    login("ivan")
    assert "Balance so far" in client.get(f"{T}/randomization").get_data(as_text=True)
    # An amendment that blinds investigators too: the same page no longer shows arms or balance.
    text = DEFAULT_PROTOCOL.read_text(encoding="utf-8").replace(
        'blinded_roles = ["assessor", "monitor"]', 'blinded_roles = ["assessor", "monitor", "investigator"]')
    amended = tmp_path / "hip-pt-clbp.toml"
    amended.write_text(text, encoding="utf-8")
    load_trial(amended)
    html = client.get(f"{T}/randomization").get_data(as_text=True)
    assert "Balance so far" not in html and "Hip-focused PT" not in html and "Spine-focused PT" not in html
    code, _ = randomized
    html = client.get(f"{T}/participants/{code}").get_data(as_text=True)
    assert "Hip-focused PT" not in html and "Spine-focused PT" not in html


# -- unblinding --------------------------------------------------------------------------------------------

def test_unblinding_needs_reason_and_password_and_is_on_the_ledger(client, investigator, randomized, db):
    code, arm = randomized
    label = {"HIP": "Hip-focused PT", "SPINE": "Spine-focused PT"}[arm]
    url = f"{T}/unblind/{code}"
    html = client.get(url).get_data(as_text=True)
    assert 'for="reason"' in html and 'for="password"' in html and 'autocomplete="current-password"' in html
    token = csrf_token(client, url)
    resp = client.post(url, data={"csrf_token": token, "reason": " ", "password": "wrong password"})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "Reason for unblinding is required" in html and "Your password is not your current password" in html
    assert "wrong password" not in html and label not in html.split("<main")[1]
    assert count(db, Unblinding) == 0
    resp = client.post(url, data={"csrf_token": token, "reason": "SAE: " + XSS, "password": PASSWORD})
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert f"{code} is allocated to {label} ({arm})" in html
    assert XSS not in html and "&lt;script&gt;" in html
    assert count(db, Unblinding) == 1
    html = client.get(f"{T}/unblinding").get_data(as_text=True)
    assert code in html and "Ivan Petrov (ivan)" in html and "SAE: &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS not in html
    with db.session(write=False) as s:
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "unblinding:create"))
        assert entry is not None and entry.participant == code


def test_unblinding_a_participant_not_randomized(client, investigator, enroll):
    code = enroll("DE", "M")
    html = client.get(f"{T}/unblind/{code}").get_data(as_text=True)
    assert "has not been randomized" in html and 'name="password"' not in html
    resp = client.post(f"{T}/unblind/{code}", data={"csrf_token": csrf_token(client, f"{T}/randomization"),
                                                     "reason": "x", "password": PASSWORD})
    assert resp.status_code == 200 and "has not been randomized" in resp.get_data(as_text=True)
    assert client.get(f"{T}/unblind/XX-9999").status_code == 404


def test_admin_reads_the_ledger(client, make_user, login, trial):
    make_user("adm", "hip-pt-clbp:admin")
    login("adm")
    assert "Nobody has been unblinded." in client.get(f"{T}/unblinding").get_data(as_text=True)


# -- access ----------------------------------------------------------------------------------------------

def test_csrf_required_on_each_post(client, investigator, randomized, db):
    code, _ = randomized
    for path, data in [(f"{T}/randomization/generate", {}), (f"{T}/randomization/import", {"file": ""}),
                       (f"{T}/unblind/{code}", {"reason": "x", "password": PASSWORD})]:
        resp = client.post(path, data=data)
        assert resp.status_code == 400 and "expired" in resp.get_data(as_text=True), path
    assert count(db, Unblinding) == 0


def test_wrong_role_gets_403(client, make_user, login, trial, randomized):
    code, _ = randomized
    make_user("cora", "hip-pt-clbp:coordinator@DE")
    make_user("ada", "hip-pt-clbp:assessor@DE")
    make_user("moe", "hip-pt-clbp:monitor")
    make_user("adm", "hip-pt-clbp:admin")
    forbidden = {
        "cora": [f"{T}/randomization", f"{T}/randomization/generate", f"{T}/unblind/{code}", f"{T}/unblinding"],
        "ada": [f"{T}/randomization", f"{T}/unblind/{code}", f"{T}/unblinding"],
        "moe": [f"{T}/randomization", f"{T}/unblind/{code}", f"{T}/unblinding"],
        "adm": [f"{T}/unblind/{code}"],
    }
    for user, paths in forbidden.items():
        c = client.application.test_client()
        login(user, c=c)
        token = csrf_token(c, f"{T}/participants")
        for path in paths:
            assert c.get(path).status_code == 403, (user, path)
        assert c.post(f"{T}/randomization/generate", data={"csrf_token": token}).status_code == (
            409 if user == "adm" else 403)
        assert c.post(f"{T}/unblind/{code}", data={"csrf_token": token, "reason": "r",
                                                    "password": PASSWORD}).status_code == 403
