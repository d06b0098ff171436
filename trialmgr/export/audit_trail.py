"""The bundle's audit/entries.jsonl: every entry of the trial in seq order, one canonical JSON object a line
(sorted keys, no whitespace, UTF-8, ``ts`` as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``), with the values of withheld
entries (blinded, de-identified bundles) replaced by null and ``"redacted": true`` added.

Two ways to the same bytes:

* ``python_lines``: the reference. Core rows (the timestamp through the UTC type), redaction in Python, orjson
  (byte-identical to the canonical stdlib encoder for the str/int/None/bool values of an entry; see
  tests/services/test_export_fast_paths.py).
* ``_pg_copy``: PostgreSQL builds each line itself (``to_json`` escapes strings exactly as the canonical encoder
  does, ``to_char`` writes the timestamp), joins the lines of each range of ``_SEQ_SPAN`` seq numbers into one
  value, and streams those with one binary ``COPY ... TO STDOUT``. The database does the formatting in its own
  process, on the other core, and Python only passes a few hundred large pieces on: for the million entries of
  a large trial this is most of the export's time saved. (One COPY row a line cost the Python thread taking
  them a GIL hand-over per line, which slowed the form formatting alongside and, through it, the COPY.) The
  tests compare both ways on strings full of quotes, backslashes, control characters and non-ASCII text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
from sqlalchemy import DateTime, Integer, String, Text, text
from sqlalchemy.orm import Session

from trialmgr.db.models_audit import AuditEntry
from trialmgr.domain import audit as chainlib
from trialmgr.services import audit

BLINDED_ENTITIES = frozenset({"allocation", "unblinding"})
# What a withheld entry keeps: enough to check that nothing was removed, inserted or reordered.
KEEP = frozenset({"seq", "chain", "chain_seq", "prev_hash", "hash", "action", "entity_type", "trial"})
_CHUNK = 1 << 20
# The PostgreSQL path joins the lines of this many consecutive seq numbers into one COPY row (~2 MiB for a trial
# that owns every seq; fewer lines when trials interleave). Memory holds one such piece at a time.
_SEQ_SPAN = 4096


def write_entries(write: Callable[[bytes], object], session: Session, trial_id: str, blinded: bool,
                  deidentified: bool) -> None:
    """Write the trial's entries.jsonl as UTF-8 bytes through ``write`` (in chunks of about 1 MiB)."""
    audit.write_pending(session)  # entries recorded earlier in this transaction are part of the trail
    if session.get_bind().dialect.name == "postgresql" and pg_copy_sql(blinded, deidentified) is not None:
        _pg_copy(write, session, blinded, deidentified, trial_id)
        return
    buf: list[bytes] = []
    size = 0
    for line in python_lines(session, trial_id, blinded, deidentified):
        buf.append(line)
        size += len(line)
        if size >= _CHUNK:
            write(b"".join(buf))
            buf, size = [], 0
    if buf:
        write(b"".join(buf))


def python_lines(session: Session, trial_id: str, blinded: bool, deidentified: bool) -> Iterator[bytes]:
    """The reference encoding, one ``bytes`` line (with its newline) per entry."""
    dumps, sort = orjson.dumps, orjson.OPT_SORT_KEYS
    utc_text = chainlib.utc_text
    for e in audit.iter_entries(session, trial=trial_id):
        row = dict(e)
        row["ts"] = utc_text(row["ts"])
        if (blinded and row["entity_type"] in BLINDED_ENTITIES) or (
                deidentified and (row["participant"] is not None or "/screening/" in row["chain"])):
            ts = "REDACTED" if deidentified else row["ts"]
            row = {k: (v if k in KEEP else None) for k, v in row.items()}
            row["ts"] = ts
            row["redacted"] = True
        yield dumps(row, option=sort) + b"\n"


_REDACTED_TS = "'\"REDACTED\"'"
# (The text to_char writes holds digits, '-', 'T', ':', '.' and 'Z' only: nothing JSON would escape.)
_TS_TEXT = """to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_TS_SQL = f"""'"' || {_TS_TEXT} || '"'"""


def _joined(tokens: list) -> str:
    """SQL concatenating tokens (str: SQL text; tuple (text,): a constant), adjacent constants joined first:
    each || is a call for every entry."""
    merged: list = []
    for t in tokens:
        if isinstance(t, tuple) and merged and isinstance(merged[-1], tuple):
            merged[-1] = (merged[-1][0] + t[0],)
        else:
            merged.append(t)
    return _balanced(["'" + t[0].replace("'", "''") + "'" if isinstance(t, tuple) else t for t in merged])


def _balanced(terms: list[str]) -> str:
    """a || b || c ... nested as a balanced tree, ((a || b) || (c || d)): each || copies both its operands, so a
    chain copied the line's growing head once per term (a line of 30 terms: 15 times its length, 5 here)."""
    if len(terms) <= 2:
        return " || ".join(terms)
    half = len(terms) // 2
    return f"({_balanced(terms[:half])}) || ({_balanced(terms[half:])})"


def pg_line_sql(blinded: bool, deidentified: bool) -> tuple[str, str, str, str, str] | None:
    """The SQL pieces of one line on PostgreSQL, over the columns of audit_entry (and ``_r``, true for a
    withheld entry): (the withholding condition, or ""; the plain line; the exact line; the test, over a column
    ``plain`` holding the plain line, that the plain line is the exact one; the number of quotes the plain line
    holds when it is). The lines without their newline. None when a column has a type this rendering does not
    know (the Python path is then used).

    The exact line is built value by value with to_json, as the canonical encoder would write each. The plain
    line wraps text in quotes as it is: the same bytes unless a value holds a quote, a backslash or a control
    character (what JSON escapes; to_json escapes nothing else). The test runs to_json once over the whole plain
    line: it adds one backslash for each quote the line holds (the keys', the values' own), its own two quotes,
    and a character or more for each other escape. So the length grows by exactly 2 + the quotes a line holds
    when no value holds one (two per key, two per quoted value: num_nonnulls) only when no value holds any
    character JSON escapes. (A to_json call per column: 4.1 s of one database process for 1.2 M entries; the
    plain line and its test: 3.5 s.)"""
    table = AuditEntry.__table__
    redact = []
    if blinded:
        redact.append("entity_type IN (" + ", ".join(f"'{e}'" for e in sorted(BLINDED_ENTITIES)) + ")")
    if deidentified:
        redact.append("(participant IS NOT NULL OR strpos(chain, '/screening/') > 0)")
    cond = " OR ".join(redact)
    # Each value twice: as to_json writes it (exact) and plainly quoted (as tokens for _joined, key included).
    parts: list[tuple[str, str, Callable[[str], list]]] = []  # (key, SQL of the exact JSON value, plain tokens)
    quoted: list[str] = []  # num_nonnulls() arguments: non-NULL for each value the plain line wraps in quotes
    for col in table.columns:
        name = col.name
        if not name.isidentifier() or name in ("redacted", "plain", "_r"):
            return None
        redact = bool(cond) and name not in KEEP
        if isinstance(col.type, DateTime) or isinstance(getattr(col.type, "impl", None), DateTime):
            if name != "ts":
                return None
            value = _TS_SQL if not col.nullable else f"coalesce({_TS_SQL}, 'null')"
            quoted.append(name)  # (the timestamp's text, or "REDACTED", is quoted: NULL only when ts is)
            if deidentified:
                value = f"CASE WHEN _r THEN {_REDACTED_TS} ELSE {value} END"
            inner, redact_as = _TS_TEXT, '"REDACTED"' if deidentified else None
        elif isinstance(col.type, Integer | String | Text):
            # An integer's JSON text is its text; a NOT NULL column needs no null.
            integer = isinstance(col.type, Integer)
            value = f"{name}::text" if integer else f"to_json({name})::text"
            if col.nullable:
                value = f"coalesce({value}, 'null')"
            if redact:
                value = f"CASE WHEN _r THEN 'null' ELSE {value} END"
            if not integer:
                quoted.append(f"CASE WHEN NOT _r THEN {name} END" if redact else name)
            inner, redact_as = (f"{name}::text", None) if integer else (name, "null" if redact else None)
        else:
            return None

        def plain(key: str, inner=inner, integer=isinstance(col.type, Integer), nullable=col.nullable,
                  redact_as=redact_as) -> list:
            tokens: list = [(key,), inner] if integer else [(key + '"',), inner, ('"',)]
            if nullable:
                tokens = [f"coalesce({_joined(tokens)}, {_joined([(key + 'null',)])})"]
            if redact_as is not None:
                tokens = [f"CASE WHEN _r THEN {_joined([(key + redact_as,)])} ELSE {_joined(tokens)} END"]
            return tokens

        parts.append((name, value, plain))
    if cond:
        parts.append(("redacted", "CASE WHEN _r THEN 'true' END",
                      lambda key: [f"CASE WHEN _r THEN {_joined([(key + 'true',)])} ELSE '' END"]))
        quoted.append("CASE WHEN _r THEN 1 END")  # the "redacted" key itself
    parts.sort(key=lambda part: part[0])
    pieces = []
    tokens: list = []
    for i, (name, value, plain) in enumerate(parts):
        key = f'{"{" if i == 0 else ","}"{name}":'
        if name == "redacted":  # present only on withheld entries: concat_ws-style, NULL drops the key
            pieces.append(f"coalesce({_joined([(key,)])} || {value}, '')")
        else:
            pieces.append(f"{_joined([(key,)])} || {value}")
        tokens += plain(key)
    lines = [_balanced([*pieces, "'}'"]), _joined([*tokens, ("}",)])]
    exact, plain = lines
    # The quotes the plain line holds when no value holds one: two per key, two per quoted value.
    keys = sum(1 for name, *_ in parts if name != "redacted")
    expected = f"{2 * keys} + 2 * num_nonnulls({', '.join(quoted)})"
    return (cond, plain, exact, f"octet_length(to_json(plain)::text) = octet_length(plain) + 2 + {expected}",
            expected)


def pg_copy_sql(blinded: bool, deidentified: bool) -> str | None:
    """The SELECT that renders the entries on PostgreSQL: one text row per range of ``_SEQ_SPAN`` seq numbers
    (NULL for a range without entries of the trial), holding the lines of its entries in seq order, the
    rows in seq order (named parameters: ``trial``; ``first`` and ``last``, the range numbers ``seq //
    _SEQ_SPAN`` to read from and to, or None); or None when a column has a type this rendering does not know
    (the Python path is then used). Each line is the plain one when pg_line_sql's test says it is exact, else
    the exact one (rarely: a value with a quote, a backslash or a control character)."""
    parts = pg_line_sql(blinded, deidentified)
    if parts is None:
        return None
    cond, plain, exact, exact_test, _quotes = parts
    rows, first, last = _range_sql(cond)
    # (OFFSET 0: the plain line is computed once, not inlined three times.)
    line = f"CASE WHEN {exact_test} THEN plain ELSE {exact} END || E'\\n'"
    # ORDER BY g with a LIMIT: the planner then evaluates the (expensive) lines after sorting the few range
    # numbers instead of sorting the lines themselves (make_sort_input_target); the LIMIT never binds.
    return (f"SELECT (SELECT string_agg({line}, '' ORDER BY seq) "  # noqa: S608
            f"FROM (SELECT *, {plain} AS plain FROM {rows} OFFSET 0) x) "
            f"FROM generate_series({first}, {last}) g ORDER BY g LIMIT {2**63 - 1}")


def pg_plain_copy_sql(blinded: bool, deidentified: bool) -> str | None:
    """As pg_copy_sql, but every line is the plain one, untested, and each row is (the range number g, the
    lines, how many, the quotes they hold if each is exact): the lines of a range are all exact when they hold,
    of the bytes JSON escapes or writes escaped (control characters, a quote, a backslash), exactly their
    newlines and those quotes; the caller checks (_plain_lines_exact). The test of each line (pg_line_sql's, a
    to_json over the whole line) was a third of the database's work for the trail."""
    parts = pg_line_sql(blinded, deidentified)
    if parts is None:
        return None
    cond, plain, _exact, _test, quotes = parts
    rows, first, last = _range_sql(cond)
    # The range numbers sorted first, each range's lines gathered in a nested loop after them: rows come in
    # order of g without sorting the lines.
    return (f"SELECT g, x.lines, x.n, x.quotes "  # noqa: S608
            f"FROM (SELECT g::int8 AS g FROM generate_series({first}, {last}) g ORDER BY 1) r "
            f"CROSS JOIN LATERAL (SELECT string_agg(plain || E'\\n', '' ORDER BY seq) AS lines, "
            f"count(*)::int8 AS n, sum(quotes)::int8 AS quotes "
            f"FROM (SELECT *, {plain} AS plain, {quotes} AS quotes FROM {rows} OFFSET 0) x) x ORDER BY g")


def _range_sql(cond: str) -> tuple[str, str, str]:
    """(the rows of range g, with ``_r`` when cond; the first and the last range number to read)."""
    span = int(_SEQ_SPAN)
    # Built from the model's column names (identifiers, checked above) and constants; the trial is a parameter.
    where = f"trial = %(trial)s AND seq >= g * {span} AND seq < (g + 1) * {span}"
    rows = f"(SELECT *, {cond} AS _r FROM audit_entry WHERE {where}) e" if cond else \
        f"audit_entry WHERE {where}"  # noqa: S608
    # The trail's ranges, or those from %(first)s to %(last)s (range numbers; NULL: no bound), so that parts of
    # the trail can be read by connections of their own (Alongside).
    first, last = (f"{g}(%({b})s, (SELECT {f}(seq) FROM audit_entry WHERE trial = %(trial)s) / {span})"  # noqa: S608
                   for g, b, f in (("greatest", "first", "min"), ("least", "last", "max")))
    return rows, first, last


# The bytes a line holds escaped, or as its own quotes and newline only: control characters, '"' and '\\'.
_ESCAPED = bytes(range(32)) + b'"\\'


def _plain_lines_exact(lines: bytes, n: int, quotes: int) -> bool:
    """True when n plain lines (each ending with its newline) holding ``quotes`` quotes of their own are exact:
    no value holds a byte JSON escapes, i.e. those bytes are exactly their newlines and their quotes."""
    return len(lines) - len(lines.translate(None, _ESCAPED)) == n + quotes


def _pg_copy(write: Callable[[bytes], object], session: Session, blinded: bool, deidentified: bool,
             trial_id: str) -> None:
    _copy_trail(write, session.connection().connection.driver_connection, blinded, deidentified, trial_id)


class _NotExact(Exception):
    def __init__(self, g: int) -> None:
        super().__init__(g)
        self.g = g


def _copy_trail(write: Callable[[bytes], object], conn, blinded: bool, deidentified: bool, trial_id: str,
                first: int | None = None, last: int | None = None) -> None:
    """Stream the lines (of the ranges first..last) on a psycopg connection, in its current transaction: the
    plain lines of each range as long as they are exact (the usual trail), then, from the first range holding a
    value JSON escapes (a quote, a backslash, a control character), the lines tested one by one (pg_copy_sql):
    no slower than those alone, whatever the trail holds, but for the ranges read ahead and dropped."""
    params = {"trial": trial_id, "first": first, "last": last}
    with conn.cursor() as cur:
        cur.execute("SAVEPOINT trail_plain")  # (an interrupted COPY fails the transaction: rolled back to here)
        try:
            with cur.copy(f"COPY ({pg_plain_copy_sql(blinded, deidentified)}) TO STDOUT (FORMAT binary)",
                          params) as cp:
                utf8 = conn.info.encoding == "utf-8"
                cp.set_types(["int8", _utf8_text(conn), "int8", "int8"])
                for g, lines, n, quotes in cp.rows():
                    if lines is None:
                        continue
                    if not utf8:
                        lines = lines.encode()
                    if not _plain_lines_exact(lines, n, quotes):
                        raise _NotExact(g)
                    write(lines)
        except _NotExact as stop:
            cur.execute("ROLLBACK TO SAVEPOINT trail_plain")
            first = stop.g
        else:
            cur.execute("RELEASE SAVEPOINT trail_plain")
            return
        cur.execute("RELEASE SAVEPOINT trail_plain")
    _copy_lines(write, conn, pg_copy_sql(blinded, deidentified), trial_id, first, last)


def _copy_lines(write: Callable[[bytes], object], conn, select_sql: str, trial_id: str,
                first: int | None = None, last: int | None = None) -> None:
    """Stream the lines (of the ranges first..last) with one binary COPY on a psycopg connection, in its current
    transaction: each row's bytes are whole lines, passed on as they are (_utf8_text)."""
    params = {"trial": trial_id, "first": first, "last": last}
    utf8 = conn.info.encoding == "utf-8"
    with conn.cursor() as cur, cur.copy(f"COPY ({select_sql}) TO STDOUT (FORMAT binary)", params) as cp:
        cp.set_types([_utf8_text(conn)])
        for (lines,) in cp.rows():
            if lines:
                write(lines if utf8 else lines.encode())


def _utf8_text(conn) -> str:
    """The type to read the lines as: a text value's binary form is its bytes in the client encoding, so when
    that is UTF-8 (the usual case) they are taken as they come (as bytea), already the file's bytes; otherwise
    as text, encoded again here. (convert_to(..., 'UTF8') in the query made the database check and copy every
    byte once more: 0.45 s of its time for 1.2 M entries.)"""
    return "bytea" if conn.info.encoding == "utf-8" else "text"


# -- alongside the rest of the export ---------------------------------------------------------------------


def can_read_alongside(session: Session) -> bool:
    """True on PostgreSQL when this transaction has written nothing yet (entries pending in the session are
    written first): another connection sharing its snapshot then sees exactly the entries this transaction
    would. Call before the export writes its checkpoint (which does not touch audit_entry)."""
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql" or pg_copy_sql(False, False) is None:
        return False
    if (dialect.server_version_info or (0,)) < (13,):  # pg_current_xact_id_if_assigned() is PostgreSQL 13's
        return False
    audit.write_pending(session)
    return bool(session.execute(text("SELECT pg_current_xact_id_if_assigned() IS NULL")).scalar())


class Alongside:
    """entries.jsonl streamed through ``write`` by other connections, in threads, while the export formats the
    form data: the database renders the lines and the zip's thread deflates them while Python formats the forms.

    The trail is read in two halves (by seq), each by a connection of its own, so that rendering it takes two
    database processes, not one: it is the largest piece of work of a large export, and with one process it
    ended seconds after the forms. The first half streams through ``write``; the second is spooled to a file in
    ``spool`` meanwhile and handed to ``append`` as soon as the first half is through (the zip's thread then
    copies it into the member, still alongside the forms).

    Each connection imports the export transaction's snapshot (pg_export_snapshot / SET TRANSACTION SNAPSHOT,
    read only, repeatable read), so it reads the trail as of that moment, as the export's own connection would
    (can_read_alongside: that transaction has written no entries of its own). ``write`` and ``append`` must be
    safe to call from another thread (the bundle's zip queue is)."""

    def __init__(self, session: Session, write: Callable[[bytes], object], append: Callable[[Path], object],
                 trial_id: str, blinded: bool, deidentified: bool, spool: Path) -> None:
        self._errors: list[BaseException] = []
        mode = (blinded, deidentified)
        snapshot = session.execute(text("SELECT pg_export_snapshot()")).scalar_one()
        # Where to cut: any range number gives the same lines in the same order (each half is bounded by the
        # snapshot's own first and last entries), so this need not be read in the snapshot.
        low, high = session.execute(text("SELECT min(seq), max(seq) FROM audit_entry WHERE trial = :t"),
                                    {"t": trial_id}).one()
        cut = (low // _SEQ_SPAN + high // _SEQ_SPAN + 1) // 2 if low is not None else 0
        spooled = spool / "entries-2.jsonl"
        engine = session.get_bind().engine
        second = threading.Thread(target=self._spool, args=(engine, snapshot, mode, trial_id, cut, spooled),
                                  name="bundle-audit-2", daemon=True)
        first = threading.Thread(target=self._first, args=(engine, snapshot, mode, trial_id, cut - 1, write, second,
                                                          append, spooled), name="bundle-audit-1", daemon=True)
        self._threads = [second, first]
        for t in self._threads:
            t.start()

    def _first(self, engine, snapshot: str, mode: tuple[bool, bool], trial_id: str, last: int,
               write: Callable[[bytes], object], second: threading.Thread, append: Callable[[Path], object],
               spooled: Path) -> None:
        self._run(engine, snapshot, mode, trial_id, write, None, last)
        second.join()
        if not self._errors:
            try:
                append(spooled)
            except BaseException as exc:  # noqa: BLE001 - re-raised by wait() in the export's thread
                self._errors.append(exc)

    def _spool(self, engine, snapshot: str, mode: tuple[bool, bool], trial_id: str, first: int, path: Path) -> None:
        try:
            with open(path, "wb") as fh:
                self._run(engine, snapshot, mode, trial_id, fh.write, first, None)
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait() in the export's thread
            self._errors.append(exc)

    def _run(self, engine, snapshot: str, mode: tuple[bool, bool], trial_id: str, write: Callable[[bytes], object],
             first: int | None, last: int | None) -> None:
        try:
            with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                conn.exec_driver_sql(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
                conn.exec_driver_sql("SET LOCAL jit = off")  # as the export's own transaction (bundle.build)
                _copy_trail(write, conn.connection.driver_connection, *mode, trial_id, first, last)
                conn.rollback()
        except BaseException as exc:  # noqa: BLE001 - re-raised by wait() in the export's thread
            self._errors.append(exc)

    def wait(self) -> None:
        """Until every line is given to ``write`` or ``append`` (re-raises a thread's error)."""
        for t in self._threads:
            t.join()
        if self._errors:
            raise self._errors[0]
