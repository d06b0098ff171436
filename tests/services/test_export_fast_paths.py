"""The export's fast paths give the same bytes as the reference encodings, on awkward text."""

from __future__ import annotations

import pytest

from trialmgr.domain import audit as chainlib
from trialmgr.export import audit_trail
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


@pytest.mark.parametrize(("blinded", "deidentified"), [(False, False), (True, False), (False, True), (True, True)])
def test_postgres_copy_lines_match_the_python_lines(db, awkward_trail, blinded, deidentified, monkeypatch):
    monkeypatch.setattr(audit_trail, "_CHUNK", 300)  # many chunks: lines cut across COPY blocks are carried over
    with db.session(write=False) as s:
        if s.get_bind().dialect.name != "postgresql":
            pytest.skip("the COPY path is PostgreSQL's")
        assert audit_trail.pg_copy_sql(blinded, deidentified) is not None
        reference = b"".join(audit_trail.python_lines(s, T, blinded, deidentified))
        chunks: list[bytes] = []
        audit_trail.write_entries(chunks.append, s, T, blinded, deidentified)
    assert reference.count(b"\n") >= 3 * len(AWKWARD)
    assert len(chunks) > 3 and all(c.endswith(b"\n") for c in chunks)
    assert b"".join(chunks) == reference
