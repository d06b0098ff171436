"""The export's fast paths give the same bytes as the reference encodings, on awkward text."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import random
import struct
import zipfile
import zlib

import pytest

from trialmgr.domain import audit as chainlib
from trialmgr.export import audit_trail, bundle, dataset, odm
from trialmgr.services import audit
from trialmgr.services.context import cli_actor

T = "hip-pt-clbp"
AWKWARD = ['plain', 'quote " and \'single\'', "back\\slash \\\\ and \\n literally", "new\nline\r\ttab",
           "controls \x01\x08\x0b\x0c\x1f\x7f", "ünïcødé — 中文 \u2028\u2029 😀", "<&>", "comma, and ; semicolon",
           "", " leading and trailing ", "/screening/ in text", "%s %(x)s {}"]


def test_orjson_matches_the_canonical_encoder():
    every_char = "".join(chr(i) for i in range(0x110000) if not 0xD800 <= i <= 0xDFFF)
    for text in [*AWKWARD, every_char]:
        row = {"seq": 12345678901, "b": text, "a": None, "c": -7, "redacted": True}
        assert audit_trail.orjson.dumps(row, option=audit_trail.orjson.OPT_SORT_KEYS).decode() == \
            chainlib.json_line(row)


@pytest.fixture
def awkward_trail(db, trial):
    actor = cli_actor(trial=T)
    with db.session() as s:
        for i, text in enumerate(AWKWARD):
            audit.record(s, actor, "form:update", "form", f"BL/{text}", participant=None if i % 3 else f"DE-{i:04d}",
                         field=text, old=text or None, new=text[::-1], reason=text or None)
            audit.record(s, actor, "allocation:create", "allocation", text, participant=f"PA-{i:04d}", new=text)
            audit.record(s, actor, "screening:create", "screening", i, chain=f"{T}/screening/{text[:5]}",
                         new=text)
            for _ in range(4 if i == 5 else 1):  # another trial's entries in between: seq ranges without ours
                audit.record(s, actor, "note:create", "note", i, trial="other-trial", new=text)


@pytest.mark.parametrize(("blinded", "deidentified"), [(False, False), (True, False), (False, True), (True, True)])
def test_the_written_trail_matches_the_python_lines(db, awkward_trail, blinded, deidentified, monkeypatch):
    """PostgreSQL builds the lines itself (one COPY); SQLite writes the Python lines. Same bytes either way."""
    monkeypatch.setattr(audit_trail, "_CHUNK", 300)  # the Python path: many chunks
    monkeypatch.setattr(audit_trail, "_SEQ_SPAN", 2)  # PostgreSQL: many COPY rows, some of them empty ranges
    resumed: list[int | None] = []
    real_copy_lines = audit_trail._copy_lines

    def spy(write, conn, sql, trial_id, first=None, last=None):
        resumed.append(first)
        real_copy_lines(write, conn, sql, trial_id, first, last)

    monkeypatch.setattr(audit_trail, "_copy_lines", spy)
    with db.session(write=False) as s:
        postgres = s.get_bind().dialect.name == "postgresql"
        reference = b"".join(audit_trail.python_lines(s, T, blinded, deidentified))
        chunks: list[bytes] = []
        audit_trail.write_entries(chunks.append, s, T, blinded, deidentified)
        if postgres:
            _plain_lines_taken(s, blinded, deidentified)
            chunks_after = []  # the transaction is usable after the interrupted COPY (rolled back to its savepoint)
            audit_trail.write_entries(chunks_after.append, s, T, blinded, deidentified)
            assert chunks_after == chunks
    assert reference.count(b"\n") >= 3 * len(AWKWARD)
    assert b"".join(chunks) == reference
    assert b"other-trial" not in reference
    if postgres:  # the COPY path really ran, in many blocks, each cut at a line end
        assert audit_trail.pg_copy_sql(blinded, deidentified) is not None
        assert len(chunks) > 3 and all(c.endswith(b"\n") for c in chunks)
        # The plain lines first (the first entries hold no escaped character), then the lines tested one by
        # one from the first range with an entry that does.
        assert len(resumed) == 2 and resumed[0] == resumed[1] and resumed[0] > 0


def test_the_plain_lines_are_taken_exactly_when_exact(db, awkward_trail, monkeypatch):
    """PostgreSQL, one entry a range: a range's plain line passes the check exactly when it is the exact line;
    a trail of plain lines only is read in one COPY."""
    monkeypatch.setattr(audit_trail, "_SEQ_SPAN", 1)
    with db.session(write=False) as s:
        if s.get_bind().dialect.name != "postgresql":
            pytest.skip("PostgreSQL only")
        run = s.connection().exec_driver_sql  # (the driver's paramstyle, as the export's COPY)
        for blinded, deidentified in [(False, False), (True, False), (False, True), (True, True)]:
            taken = {}
            for g, lines, n, quotes in run(audit_trail.pg_plain_copy_sql(blinded, deidentified),
                                           {"trial": T, "first": None, "last": None}).all():
                if lines is not None:
                    exact = run(audit_trail.pg_copy_sql(blinded, deidentified),
                                {"trial": T, "first": g, "last": g}).scalar_one()
                    taken[g] = (audit_trail._plain_lines_exact(lines.encode(), n, quotes), lines == exact)
            assert {ok for ok, _ in taken.values()} == {True, False}
            assert all(ok == same for ok, same in taken.values()), taken
        chunks: list[bytes] = []  # only plain entries (the trail up to the first awkward one): one COPY
        low = run("SELECT min(seq) FROM audit_entry WHERE trial = %(t)s AND field = 'plain'", {"t": T}).scalar()
        monkeypatch.setattr(audit_trail, "_copy_lines", None)
        audit_trail._copy_trail(chunks.append, s.connection().connection.driver_connection, False, False, T,
                                None, low)
        reference = [line for line in audit_trail.python_lines(s, T, False, False) if json.loads(line)["seq"] <= low]
        assert len(reference) > 2 and b"".join(chunks) == b"".join(reference)


def test_the_trail_read_in_another_client_encoding_is_the_same(db, awkward_trail, monkeypatch):
    """PostgreSQL: the lines come as the client encoding's bytes; when that is not UTF-8 they are decoded and
    encoded again (GB18030 holds every character of the awkward text), on both ways of reading them."""
    monkeypatch.setattr(audit_trail, "_SEQ_SPAN", 2)
    with db.session(write=False) as s:
        if s.get_bind().dialect.name != "postgresql":
            pytest.skip("PostgreSQL only")
        reference = b"".join(audit_trail.python_lines(s, T, False, False))
        s.connection().exec_driver_sql("SET LOCAL client_encoding = 'GB18030'")
        assert s.connection().connection.driver_connection.info.encoding == "gb18030"
        chunks: list[bytes] = []
        audit_trail.write_entries(chunks.append, s, T, False, False)
    assert b"".join(chunks) == reference and "中文".encode() in reference and "😀".encode() in reference


def _plain_lines_taken(s, blinded: bool, deidentified: bool) -> None:
    """PostgreSQL: the plain line (text wrapped in quotes as it is) is taken for an entry exactly when it has the
    exact line's bytes: the usual entry takes it, one with a quote, a backslash or a control character anywhere
    (a withheld value too) does not, and non-ASCII text needs no escape."""
    cond, plain, exact, test, _quotes = audit_trail.pg_line_sql(blinded, deidentified)
    rows = f"(SELECT *, {cond} AS _r FROM audit_entry) e" if cond else "audit_entry"
    # (The driver's own paramstyle: the lines' constants hold ":null", which text() would take for a parameter.)
    got = s.connection().exec_driver_sql(f"SELECT {test}, plain = ({exact}), plain FROM "  # noqa: S608
                                         f"(SELECT *, {plain} AS plain FROM {rows} WHERE trial = %(t)s OFFSET 0) x",
                                         {"t": T}).all()
    assert {fast for fast, *_ in got} == {True, False}
    for fast, same, line in got:
        assert fast == same, line
        assert fast or any(c in line for c in '\\"') or any(ord(c) < 32 for c in line), line


# -- the per-form fast path of the CSV and ODM formatting --------------------------------------------------


def _slow(plan, r) -> tuple[str, str, int, str]:
    """What the csv module and odm.event_xml write for a record (the exact path)."""
    wide, long = bundle._Lines(), bundle._Lines()
    csv.writer(wide, lineterminator="\n").writerow(bundle._form_row(plan.form, plan.fields, r))
    rows = list(bundle._long_rows(plan.form, plan.fields, r))
    csv.writer(long, lineterminator="\n").writerows(rows)
    return "".join(wide), "".join(long), len(rows), odm.event_xml(*bundle._odm_event(plan.form, plan.fields, r))


@pytest.mark.parametrize("deidentified", [False, True])
def test_form_fast_path_writes_what_the_csv_module_and_odm_write(deidentified):
    from tests.support import DEFAULT_PROTOCOL
    from trialmgr.domain import crf as crflib
    from trialmgr.protocols import load_protocol_file
    from trialmgr.synthetic import form_values

    proto = load_protocol_file(DEFAULT_PROTOCOL)
    opts = dataset.ExportOptions(deidentified=deidentified, secret=b"s")
    rng = random.Random(3)
    today = dt.date(2026, 11, 24)
    subject = dataset.Subject(1, "DE-0001", "DE", {}, "DE|F", "randomized", today, None, None, opts.shift("DE-0001"))
    checked = fast = complete = whole = 0
    for form in proto.forms:
        plan = bundle._FormPlan(form, dataset.exported_fields(form, opts))
        real_whole = plan._whole

        def counted(*a, real_whole=real_whole):
            nonlocal whole
            got = real_whole(*a)
            whole += got is not None
            return got

        plan._whole = counted
        for i in range(80):
            res = crflib.validate_form(form, form_values(form, rng, today), reference_date=today)
            values = {f.id: crflib.serialize_value(f, v) for f in form.fields
                      if (v := res.values.get(f.id)) is not None}
            values |= {d: str(v) for d, v in res.derived.items() if v is not None}
            text_field = next((f.id for f in plan.fields if f.type == "text"), None)
            if text_field and i % 3 == 0:  # text the templates must pass through untouched (no quoting needed)
                values[text_field] = ("{0} {1[0]} {{}} %s %(x)s \\ back\\slash ünïcødé — 中文 \u2028 😀 "
                                      "\x01\x1f\x7f;")[i % 7:]
            missing = {}
            for f in form.fields[i % 3::5] if i % 4 else ():  # some missing codes, some values dropped
                values.pop(f.id, None)
                if i % 2:
                    missing[f.id] = "RF"
            empty = next((f.id for f in form.fields if f.id in values and f.type != "date"), None)
            if i % 7 == 3 and empty:  # an empty stored value
                values[empty] = ""
            visit = (None, "BL", "UNS2", "M6")[i % 4]
            r = dataset.RecordRow(subject, visit, 0, today if i % 5 else None, 1 + i % 2, "complete", values,
                                  missing, bool(i % 2))
            want = _slow(plan, r)
            got = plan.fast(r)
            plain = not dataset.QUOTED.search("".join(values.values()) + "".join(missing.values()))
            if plain:  # (the values checked beforehand, with the participant's)
                assert plan.fast(dataset.RecordRow(*r._content(), plain=True)) == got
            if not missing:  # the values as read on PostgreSQL: keys and texts, in an order that changes at times
                keys = sorted(values, reverse=i % 5 == 4)
                as_read = dataset.RecordRow(*r._content()[:6], None, {}, r.sdv, plain, keys, [values[k] for k in keys])
                assert plan.fast(as_read) == got and as_read == r and as_read.values == values
            checked += 1
            complete += not missing and len(values) == len(plan.fields) + len(plan.derived)
            if got is not None:
                fast += 1
                assert got == want, (form.id, i)
            if text_field:  # a character that needs quoting or escaping: the exact path
                r.values[text_field] = 'a, "b" & <c>'
                assert plan.fast(r) is None
    # complete records too, most of them through the templates (the others: a label not seen yet, an empty
    # value, a date to shift)
    assert fast > checked * 0.8 and complete > checked * 0.1
    assert whole > complete * (0.3 if deidentified else 0.6), (whole, complete)


# -- the audit trail read alongside the form data (PostgreSQL, committed data) ------------------------------


def test_the_trail_read_alongside_is_the_trail_read_after(tmp_path, settings, monkeypatch):
    """On PostgreSQL a second connection sharing the export's snapshot writes entries.jsonl while the forms are
    formatted; the bundle is byte for byte the one the export's own connection gives. SQLite (a file database
    here, committed like PostgreSQL's) never reads alongside, and its two exports are identical too."""
    import zipfile
    from contextlib import nullcontext

    from tests.conftest import PG_URL, throwaway_postgres
    from tests.support import DEFAULT_PROTOCOL
    from trialmgr.db import Database
    from trialmgr.db import migrate as migrations
    from trialmgr.domain.bundle import verify_bundle
    from trialmgr.domain.vocab import Role
    from trialmgr.services import trials

    where = throwaway_postgres(PG_URL, "trialmgr_exp") if PG_URL else nullcontext(f"sqlite:///{tmp_path}/e.db")
    with where as url:
        db = Database(url)
        try:
            migrations.upgrade(db.engine)
            with db.session() as s:
                trials.load_protocol(s, cli_actor(), DEFAULT_PROTOCOL)
            actor = cli_actor(trial=T)
            for i, text in enumerate(AWKWARD):
                with db.session() as s:
                    audit.record(s, actor, "form:update", "form", f"BL/{text}", participant=f"DE-{i:04d}",
                                 field=text, old=text or None, new=text[::-1])
                    audit.record(s, actor, "allocation:create", "allocation", text, participant=f"PA-{i:04d}")
            investigator = cli_actor(role=Role.INVESTIGATOR, trial=T)
            started = []
            real = audit_trail.Alongside.__init__

            def spy(self, *a, **k):
                started.append(True)
                real(self, *a, **k)

            monkeypatch.setattr(audit_trail.Alongside, "__init__", spy)
            # Ranges of two seq numbers: both halves of the trail (streamed, spooled) hold many of them.
            monkeypatch.setattr(audit_trail, "_SEQ_SPAN", 2)
            spooled = []
            real_append = bundle._Zip.append

            def spy_append(self, name, path):
                spooled.append(path.read_bytes())
                real_append(self, name, path)

            monkeypatch.setattr(bundle._Zip, "append", spy_append)
            bundles = {}
            for alongside in (True, False):
                if not alongside:
                    monkeypatch.setattr(audit_trail, "can_read_alongside", lambda _s: False)
                path = tmp_path / f"{alongside}.zip"
                with db.session() as s:
                    bundle.build(s, investigator, settings, T, path, blinded=True)
                    s.rollback()  # the same audit trail for the second export
                assert verify_bundle(path).ok
                with zipfile.ZipFile(path) as zf:
                    bundles[alongside] = {n: zf.read(n) for n in zf.namelist()
                                          if n not in ("manifest.json", "README.txt", "odm.xml",
                                                       "audit/checkpoints.jsonl")}
            assert started == ([True] if PG_URL else [])
            if PG_URL:  # the second half was spooled and appended: a proper part of the trail, not all of it
                trail = bundles[True]["audit/entries.jsonl"]
                assert len(spooled) == 1 and spooled[0].count(b"\n") >= 4 and trail.endswith(spooled[0])
                assert len(trail) > len(spooled[0]) + 1000
            assert bundles[True]["audit/entries.jsonl"].count(b"\n") >= 2 * len(AWKWARD)
            assert bundles[True] == bundles[False]
        finally:
            db.dispose()


def test_an_empty_stored_date_exports_as_empty_when_dates_are_shifted():
    spec = type("Spec", (), {"type": "date"})()  # value_text reads only the field's type
    shift = dt.timedelta(days=-17)
    assert dataset.value_text(spec, "", shift) == "" and dataset.value_text(spec, None, shift) == ""
    assert dataset.value_text(spec, "2025-03-01", shift) == "2025-02-12"


# -- the zip ------------------------------------------------------------------------------------------------


def _raw_member(path, info: zipfile.ZipInfo) -> bytes:
    """A member's compressed bytes, as stored after its local header."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(30)
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        return fh.read(info.compress_size)


def test_members_are_deflated_by_isal_into_a_plain_zip(tmp_path):
    from isal import isal_zlib

    data = b"".join(b"DE-%04d,BL,qbpds,%d,ok\n" % (i % 977, i) for i in range(60_000))
    pieces = [data[:700_000], data[700_000:]]
    z = bundle._Zip(tmp_path / "b.zip")
    put = z.begin("a.csv")
    for piece in pieces:
        put(piece)
    z.end("a.csv")
    z.text("b.txt", lambda out: out.write("ünïcødé, \"quoted\"\n" * 5000))
    hashes = dict(z.wait())
    z.close()
    with zipfile.ZipFile(tmp_path / "b.zip") as zf:  # the standard library reads it: CRCs and sizes check out
        assert zf.testzip() is None
        assert zf.read("a.csv") == data
        assert zf.read("b.txt").decode() == "ünïcødé, \"quoted\"\n" * 5000
        info = zf.getinfo("a.csv")
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.date_time == bundle.ZIP_TIME
    assert hashes["a.csv"] == hashlib.sha256(data).hexdigest()
    # The stored stream is ISA-L's level 1, not zlib's (whose bytes differ): the fast compressor is in use.
    fast = isal_zlib.compressobj(1, isal_zlib.DEFLATED, -15)
    slow = zlib.compressobj(1, zlib.DEFLATED, -15)
    expected = b"".join(fast.compress(piece) for piece in pieces) + fast.flush()
    assert expected != b"".join(slow.compress(piece) for piece in pieces) + slow.flush()
    assert _raw_member(tmp_path / "b.zip", info) == expected


# -- the records, read on PostgreSQL with one binary COPY ---------------------------------------------------


def test_records_read_with_copy_are_the_records_of_the_flat_join(db, actor, randomized, enroll):
    """PostgreSQL streams one COPY row per participant, its records' columns and values as arrays, split in
    Python; every database can read the flat join, grouped in Python. Same records, same order, same values:
    awkward text, missing codes, NULL and empty values, records without any value (a participant's first, last
    and a middle one), any-time forms (no visit) in two instances, derived values, participants without any
    record, one form only (and a participant with none of that form)."""
    from sqlalchemy import delete, select, update

    from trialmgr.db.models_crf import FormRecord, FormValue
    from trialmgr.services import crf, enrollment, trials

    codes = [randomized("DE", "F"), randomized("PA", "M"), randomized("NC", "F"), randomized("DE", "M")]
    nothing = [enroll("DE", "F"), enroll("NC", "M")]  # no record at all (one between the others in order)
    only_ae = randomized("PA", "F")  # an any-time form only: none of the one-form read's
    notes = [t for t in AWKWARD if t and t == t.strip() and "\r" not in t and "\x01" not in t]  # as saved
    ae = {"onset_date": "2026-01-02", "severity": "mild", "serious": "no", "relatedness": "not", "action_taken": "none",
          "outcome": "recovered"}
    with db.session() as s:
        for i, code in enumerate(codes):
            p = enrollment.get_participant(s, actor, T, code)
            crf.save_form(s, actor, p, "performance", {"gait_usual_s": "8.00", "gait_fast_s": "6.25", "tug_s": "9.5",
                                                       "six_mwt_m": "410"}, missing={"chair_stand_30s": "RF"},
                          visit_code="BL")
            crf.save_form(s, actor, p, "session_log", {"sessions_planned": "8", "sessions_attended": str(6 + i % 2),
                                                       "home_program": "most", "notes": notes[i]}, visit_code="W4")
            crf.save_form(s, actor, p, "adverse_event", {"term": notes[-1 - i], **ae}, status="draft")
            if i == 1:  # a second instance, with a missing code where the first has none
                crf.save_form(s, actor, p, "adverse_event", {"term": "second", **ae} | {"outcome": ""},
                              missing={"outcome": "UNK"})
        crf.save_form(s, actor, enrollment.get_participant(s, actor, T, only_ae), "adverse_event",
                      {"term": "only", **ae})
    with db.session() as s:  # an empty stored text and a NULL without a missing code, as older data may hold
        for field, value in (("tug_s", ""), ("six_mwt_m", None)):
            s.execute(update(FormValue).where(FormValue.field_id == field).values(value=value))
        ids = {code: enrollment.get_participant(s, actor, T, code).id for code in codes}
        for code, form_id in ((codes[0], "performance"), (codes[1], "adverse_event"), (codes[2], "session_log")):
            rid = s.scalar(select(FormRecord.id).where(FormRecord.participant_id == ids[code],
                                                       FormRecord.form_id == form_id, FormRecord.instance == 1))
            s.execute(delete(FormValue).where(FormValue.record_id == rid))  # a record without any value
    with db.session(write=False) as s:
        proto = trials.current_protocol(s, T)
        by_id = {x.id: x for x in dataset.subjects(s, proto, dataset.ExportOptions())}
        flat = list(dataset._records_flat(s, proto, by_id, None))
        got = list(dataset.records(s, proto, by_id))
        one_form = list(dataset.records(s, proto, by_id, "session_log"))
        assert list(dataset.records(s, proto, by_id, "deviation")) == []
        postgres = s.get_bind().dialect.name == "postgresql"
        if postgres:  # the COPY path really ran
            assert dataset.records(s, proto, by_id).__name__ == "_records_pg"
    assert got == flat
    assert len(flat) == 3 * 4 + 1 + 1
    for _f, r in got:  # plain: known to hold no character that CSV or XML would quote or escape
        assert not (r.plain and dataset.QUOTED.search("".join(r.values.values()) + "".join(r.missing.values())))
    if postgres:  # (each participant's values checked at once, those with awkward notes are not plain)
        assert {r.plain for _f, r in got} == {True, False}
    assert not {r.subject.code for _f, r in flat} & set(nothing)
    assert one_form == [(f, r) for f, r in flat if f == "session_log"] and len(one_form) == 4
    order = [0, 3, 2, 1]  # by site, then number: DE-0001, DE-0003, NC-0001, PA-0001 (then PA-0002: only_ae)
    assert [r.subject.code for _f, r in one_form] == [codes[i] for i in order]
    assert [r.values.get("notes") for _f, r in one_form] == [notes[0], notes[3], None, notes[1]]
    assert [(r.values, r.missing) for _f, r in one_form][2] == ({}, {})
    perf = [r for f, r in flat if f == "performance"]
    assert [r.missing for r in perf] == [{}] + [{"chair_stand_30s": "RF"}] * 3
    assert [(r.values.get("tug_s"), "six_mwt_m" in r.values) for r in perf] == [(None, False)] + [("", False)] * 3
    anytime = [(r.subject.code, r.instance, r.visit_code, r.visit_date, r.status, r.values.get("term"), r.missing)
               for f, r in flat if f == "adverse_event"]
    assert anytime == [(codes[0], 1, None, None, "draft", notes[-1], {}),
                       (codes[3], 1, None, None, "draft", notes[-4], {}),
                       (codes[2], 1, None, None, "draft", notes[-3], {}),
                       (codes[1], 1, None, None, "draft", None, {}),
                       (codes[1], 2, None, None, "complete", "second", {"outcome": "UNK"}),
                       (only_ae, 1, None, None, "complete", "only", {})]
    assert [r.visit_code for f, r in flat if r.subject.code == codes[1]] == ["BL", "W4", None, None]
    assert all("attendance" in r.values for _f, r in one_form if r.values)  # derived values come too
