from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from tests.support import PASSWORD, eligible_answers
from trialmgr.db.models_accounts import Signature, Trial
from trialmgr.db.models_crf import FormValue
from trialmgr.domain.bundle import verify_bundle
from trialmgr.domain.errors import DataLocked, ValidationFailed
from trialmgr.domain.vocab import DataState, Role
from trialmgr.export import bundle
from trialmgr.services import accounts, crf, enrollment, locking, queries, randomization, visits
from trialmgr.services.context import Actor

T = "hip-pt-clbp"


@pytest.fixture
def investigator(db, make_user, trial):
    make_user("ines", f"{T}:investigator", full_name="Ines Investigator")
    with db.session(write=False) as s:
        uid = accounts.get_user(s, "ines").id
    return Actor(username="ines", role=Role.INVESTIGATOR, trial=T, user_id=uid, full_name="Ines Investigator")


@pytest.fixture
def trial_with_data(db, actor, randomized):
    codes = [randomized("DE", "F"), randomized("PA", "M"), randomized("NC", "F")]
    with db.session() as s:
        for i, code in enumerate(codes):
            p = enrollment.get_participant(s, actor, T, code)
            crf.save_form(s, actor, p, "pain", {"back_pain": str(3 + i), "hip_pain": "1"}, visit_code="BL")
            crf.save_form(s, actor, p, "performance", {"gait_usual_s": "8.00", "gait_fast_s": "6.25", "tug_s": "9.5",
                                                       "six_mwt_m": "410"}, missing={"chair_stand_30s": "RF"},
                          visit_code="BL")
        p = enrollment.get_participant(s, actor, T, codes[0])
        crf.save_form(s, actor, p, "demographics", {"height_cm": "170.5", "weight_kg": "70.0", "ethnicity":
                                                    "not_hispanic", "race": "white"}, visit_code="BL",
                      status="draft")
    return codes


def _lock(db, hasher, settings, investigator, action="lock", reason=None):
    with db.session() as s:
        return locking.change_state(s, investigator, hasher, settings, T, action, password=PASSWORD, reason=reason)


def test_signatures_need_the_password_and_show_name_time_meaning(db, hasher, settings, investigator, trial):
    with pytest.raises(ValidationFailed) as info, db.session() as s:
        locking.change_state(s, investigator, hasher, settings, T, "freeze", password="not my password")
    assert "password" in info.value.errors
    with db.session(write=False) as s:
        assert s.get(Trial, T).data_state is DataState.OPEN
    _, sig = _lock(db, hasher, settings, investigator, "freeze")
    assert sig.printed_name == "Ines Investigator" and sig.meaning == "frozen" and sig.signed_at.tzinfo is dt.UTC
    _, sig = _lock(db, hasher, settings, investigator, "lock")
    assert sig.meaning == "locked" and sig.record_hash and len(sig.record_hash) == 64
    with pytest.raises(ValidationFailed, match="reason"), db.session() as s:
        locking.change_state(s, investigator, hasher, settings, T, "unlock", password=PASSWORD)
    _lock(db, hasher, settings, investigator, "unlock", reason="late lab data")
    with db.session(write=False) as s:
        assert s.get(Trial, T).data_state is DataState.FROZEN
        assert [x.meaning for x in s.scalars(select(Signature).order_by(Signature.id))] == ["frozen", "locked",
                                                                                            "unlocked"]


def test_every_service_write_path_refuses_locked_data(db, actor, hasher, settings, investigator, trial_with_data,
                                                      enroll):
    code = trial_with_data[0]
    waiting = enroll("DE", "M")  # enrolled, not yet randomized
    with db.session() as s:
        rec = crf.read_form(s, actor, enrollment.get_participant(s, actor, T, code), "pain", "BL").record
        q = queries.open_query(s, actor, enrollment.get_participant(s, actor, T, code), rec, "back_pain", "check")
        qid, other = q.id, enrollment.screen(s, actor, T, eligible_answers(), site="DE").screening.id
    _lock(db, hasher, settings, investigator, "lock")
    attempts = {
        "screen": lambda s, p: enrollment.screen(s, actor, T, eligible_answers(), site="DE"),
        "enroll": lambda s, p: enrollment.enroll(s, actor, T, other, consent_date=enrollment.today(),
                                                 consent_version="1.0"),
        "decline": lambda s, p: enrollment.decline(s, actor, T, other, "changed mind"),
        "randomize": lambda s, p: randomization.randomize(s, actor, settings, T, waiting),
        "save form": lambda s, p: crf.save_form(s, actor, p, "pain", {"back_pain": "1", "hip_pain": "1"},
                                                visit_code="BL", reason="x"),
        "any-time form": lambda s, p: crf.save_form(s, actor, p, "deviation", {}, status="draft"),
        "unscheduled visit": lambda s, p: visits.add_unscheduled(s, actor, p, "fall", enrollment.today()),
        "missed visit": lambda s, p: visits.mark_missed(s, actor, p, "W4", "ill"),
        "open query": lambda s, p: queries.open_query(s, actor, p, rec, "back_pain", "x"),
        "answer query": lambda s, p: queries.answer_query(s, actor, T, qid, "x"),
        "close query": lambda s, p: queries.close_query(s, actor, T, qid),
        "sdv": lambda s, p: crf.verify_source(s, Actor(username="m", role=Role.MONITOR, trial=T), p, "pain", "BL"),
        "generate list": lambda s, p: randomization.generate(s, actor, settings, T),
    }
    for name, attempt in attempts.items():
        with pytest.raises(DataLocked), db.session() as s:
            attempt(s, enrollment.get_participant(s, actor, T, code))
            pytest.fail(f"{name} was not refused")


def test_frozen_data_take_query_answers_but_no_new_data(db, actor, hasher, settings, investigator, trial_with_data):
    code = trial_with_data[0]
    with db.session() as s:
        p = enrollment.get_participant(s, actor, T, code)
        q = queries.open_query(s, actor, p, crf.read_form(s, actor, p, "pain", "BL").record, "back_pain", "check")
    _lock(db, hasher, settings, investigator, "freeze")
    with db.session() as s:
        queries.answer_query(s, actor, T, q.id, "Confirmed against the diary.")
        with pytest.raises(DataLocked, match="frozen"):
            crf.save_form(s, actor, enrollment.get_participant(s, actor, T, code), "pain",
                          {"back_pain": "1", "hip_pain": "1"}, visit_code="BL", reason="x")


def test_participant_and_form_locks(db, actor, hasher, investigator, trial_with_data):
    code = trial_with_data[1]
    with db.session() as s:
        p = enrollment.get_participant(s, actor, T, code)
        locking.set_participant_lock(s, investigator, hasher, p, True, password=PASSWORD)
        with pytest.raises(DataLocked):
            crf.save_form(s, actor, p, "pain", {"back_pain": "1", "hip_pain": "1"}, visit_code="BL", reason="x")
        with pytest.raises(ValidationFailed, match="reason"):
            locking.set_participant_lock(s, investigator, hasher, p, False, password=PASSWORD)
        locking.set_participant_lock(s, investigator, hasher, p, False, password=PASSWORD, reason="query follow-up")
        rec = crf.read_form(s, actor, p, "pain", "BL").record
        locking.set_form_lock(s, investigator, hasher, p, rec, "BL/pain", True, password=PASSWORD)
        with pytest.raises(DataLocked):
            crf.save_form(s, actor, p, "pain", {"back_pain": "1", "hip_pain": "1"}, visit_code="BL", reason="x")
        crf.save_form(s, actor, p, "performance", {"gait_usual_s": "8.10", "gait_fast_s": "6.25", "tug_s": "9.5",
                                                   "six_mwt_m": "410"}, missing={"chair_stand_30s": "RF"},
                      visit_code="BL", reason="other forms stay open")


def _export(db, settings, path: Path, **kw) -> dict:
    from trialmgr.services.context import cli_actor

    with db.session() as s:
        return bundle.build(s, cli_actor(role=Role.INVESTIGATOR, trial=T), settings, T, path, **kw)


def _read(zpath: Path, name: str) -> str:
    with zipfile.ZipFile(zpath) as zf:
        return zf.read(name).decode()


def test_locked_export_verifies_matches_the_database_and_is_reproducible(db, hasher, settings, investigator,
                                                                           trial_with_data, tmp_path):
    _lock(db, hasher, settings, investigator, "lock")
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    manifest = _export(db, settings, a)
    _export(db, settings, b)
    assert manifest["kind"] == "locked" and manifest["lock_time"]
    report = verify_bundle(a, settings.key_path("audit_signing_key.pem").read_bytes() and _public_pem(settings))
    assert report.ok, report.problems
    data_files = [n for n in manifest["files"] if not n.startswith("audit/")]
    for name in data_files:
        assert _read(a, name) == _read(b, name), name
    # Every stored value appears exactly in the long CSV (read back with the csv module).
    rows = list(csv.DictReader(io.StringIO(_read(a, "values_long.csv"))))
    exported = {(r["participant"], r["visit"], r["form"], r["field"]): (r["value"], r["missing"]) for r in rows}
    with db.session(write=False) as s:
        n_values = s.scalar(select(func.count()).select_from(FormValue))
    assert len(rows) == n_values
    assert exported[(trial_with_data[1], "BL", "pain", "back_pain")] == ("4", "")
    assert exported[(trial_with_data[0], "BL", "performance", "chair_stand_30s")] == ("", "RF")
    assert exported[(trial_with_data[0], "BL", "performance", "gait_usual_speed")] == ("1.250", "")
    # And with numpy: the per-form CSV of pain, as numbers.
    pain = list(csv.DictReader(io.StringIO(_read(a, "forms/pain.csv"))))
    assert np.array([float(r["back_pain"]) for r in pain]).tolist() == [3.0, 5.0, 4.0]  # DE, NC, PA order
    participants = list(csv.DictReader(io.StringIO(_read(a, "participants.csv"))))
    assert {r["arm"] for r in participants} <= {"HIP", "SPINE"} and all(r["randomization_date"] for r in participants)


def _public_pem(settings) -> bytes:
    from trialmgr import keys
    from trialmgr.domain import audit

    return audit.public_key_pem(keys.audit_private_key(settings))


def test_odm_validates_against_the_official_schema(db, settings, trial_with_data, tmp_path):
    import os

    import odmlib
    from lxml import etree

    path = tmp_path / "i.zip"
    _export(db, settings, path)
    xsd = Path(os.path.dirname(odmlib.__file__)) / "schemas" / "odm" / "1.3.2" / "ODM1-3-2.xsd"
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    doc = etree.fromstring(_read(path, "odm.xml").encode())
    assert schema.validate(doc), schema.error_log
    ns = {"o": "http://www.cdisc.org/ns/odm/v1.3"}
    assert len(doc.findall(".//o:SubjectData", ns)) == 3
    assert doc.find(".//o:ItemData[@ItemOID='IT.performance.chair_stand_30s']", ns).get("IsNull") == "Yes"


@pytest.mark.parametrize("tamper", ["byte", "remove", "add", "forge_manifest"])
def test_tampered_bundles_fail_verification(db, settings, trial_with_data, tmp_path, tamper):
    path = tmp_path / "b.zip"
    _export(db, settings, path)
    out = tmp_path / "t.zip"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if tamper == "byte" and item.filename == "forms/pain.csv":
                data = data.replace(b",3,", b",8,", 1)
            if tamper == "remove" and item.filename == "queries.csv":
                continue
            if tamper == "forge_manifest" and item.filename == "manifest.json":
                m = json.loads(data)
                m["files"]["forms/pain.csv"] = "0" * 64
                data = json.dumps(m).encode()
            dst.writestr(item, data)
        if tamper == "add":
            dst.writestr("extra.csv", "a,b\n")
    report = verify_bundle(out, _public_pem(settings))
    assert not report.ok
    expected = {"byte": "forms/pain.csv was changed", "remove": "queries.csv is listed", "add": "extra.csv",
                "forge_manifest": "signature is invalid"}[tamper]
    assert any(expected in p for p in report.problems), report.problems


def test_interim_blinded_and_deidentified_bundles(db, settings, trial_with_data, tmp_path):
    path = tmp_path / "blind.zip"
    manifest = _export(db, settings, path, blinded=True, deidentified=True)
    assert manifest["kind"] == "interim" and "INTERIM" in _read(path, "README.txt")
    report = verify_bundle(path, _public_pem(settings))
    assert report.ok, report.problems
    assert report.redacted > 0
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            text = zf.read(name).decode("utf-8", "replace")
            for secret in ("HIP", "SPINE", "Hip-focused PT", "Spine-focused PT", "1950-03-14"):
                assert secret not in text, (name, secret)
            if name != "protocol.toml":  # the protocol defines the field; no data file carries it
                assert "date_of_birth" not in text, name
    arms = {r["arm"] for r in csv.DictReader(io.StringIO(_read(path, "participants.csv")))}
    assert arms <= {"A", "B"}
    # Dates are shifted per participant, by the same amount in every file.
    plain = tmp_path / "plain.zip"
    _export(db, settings, plain)
    def consent(zpath):
        return {r["participant"]: r["consent_date"]
                for r in csv.DictReader(io.StringIO(_read(zpath, "participants.csv")))}

    real, shifted = consent(plain), consent(path)
    assert all(real[k] != shifted[k] for k in real)


def test_participant_lock_from_the_cli(runner, db, investigator, randomized, actor):
    code = randomized()
    result = runner.invoke(args=["data", "lock-participant", "--trial", T, "--participant", code, "--user", "ines",
                                 "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0 and "locked" in result.output and "Signed by" in result.output, result.output
    with pytest.raises(DataLocked), db.session() as s:
        crf.save_form(s, actor, enrollment.get_participant(s, actor, T, code), "pain",
                      {"back_pain": "1", "hip_pain": "1"}, visit_code="BL")
    refused = runner.invoke(args=["data", "unlock-participant", "--trial", T, "--participant", code, "--user", "ines",
                                  "--password-stdin"], input=PASSWORD + "\n")
    assert refused.exit_code == 2  # --reason is required
    ok = runner.invoke(args=["data", "unlock-participant", "--trial", T, "--participant", code, "--user", "ines",
                             "--reason", "correction after query", "--password-stdin"], input=PASSWORD + "\n")
    assert ok.exit_code == 0, ok.output
