"""Streaming verification of the audit trail with only the public key(s).

Feed the checkpoints FIRST (``add_checkpoint``/``add_checkpoints``, in checkpoint seq order), then the
entries in global ``seq`` order, chains interleaved (``add_entry``/``add_entries``), then call ``finish``.
Checkpoints come first because a signed head (chain_seq, hash) must be compared with the entry at that
position as it streams past; checkpoints are few (one per period or lock/export, listing only the chains
that moved), so memory stays bounded by chains and checkpoint heads, never by entries.

Per chain the verifier keeps the last accepted entry. An entry is accepted when its recomputed hash equals
its stored hash, its ``prev_hash`` equals the head's hash and its ``chain_seq`` is the head's plus one, and,
where a checkpoint signed that position, its hash equals the signed one. The first deviation breaks the
chain and records its problem; the next few entries of that chain only refine what kind it was:

* ``changed``  the recomputed hash differs (content edited); or a successor was chained to a different hash
  for it (edited and re-hashed); or it differs from the hash a checkpoint signed for that position (the chain
  was rewritten consistently before that checkpoint: the named entry is the signed position); or its
  chain_seq disagrees with its link (renumbered on its own).
* ``missing``  a gap in chain_seq whose first entry does not link to the head, never filled later.
* ``reordered`` a gap that is filled by a later entry of the chain: entries swapped their seq positions.
* ``inserted`` two entries claim the same predecessor (a fork); the one the chain does not continue from,
  or the one a checkpoint does not confirm, was inserted. A renumbered successor shows this directly; a
  second copy of a position the chain already passed is inserted too.
* ``truncated`` a checkpoint signed a head (chain_seq, hash) that the chain no longer reaches.
* ``signature_invalid`` / ``checkpoint_missing`` the checkpoint trail itself: bad or unknown-key signature,
  a body that differs from its row; a gap in checkpoint seq or a broken ``prev`` link.

The report holds ONE problem: checkpoint-trail problems first (every other check leans on them), then the
entry problem with the lowest global seq, then truncations. One problem per chain is kept (bounded memory).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trialmgr.domain.audit import (
    _ENTRY_PREFIX,
    _HEX64,
    CHECKPOINT_TYPE,
    GENESIS_HASH,
    HASHED_FIELDS,
    Problem,
    ProblemKind,
    VerifyReport,
    array_bytes,
    checkpoint_hash,
    key_id,
    trial_filter,
    utc_text,
)

try:
    import orjson
except ImportError:  # the domain runs on the standard library alone (array_bytes falls back)
    orjson = None  # type: ignore[assignment]

__all__ = ["VERIFY_COLUMNS", "Problem", "ProblemKind", "Segment", "Verifier", "VerifyReport", "trial_filter",
           "verify_entries", "verify_in_segments", "verify_segment"]


# seq, chain_seq, hash, then exactly the hashed array: prev_hash and HASHED_FIELDS (chain is v[4]).
VERIFY_COLUMNS: tuple[str, ...] = ("seq", "chain_seq", "hash", "prev_hash", *HASHED_FIELDS)
_ROW = operator.itemgetter(*VERIFY_COLUMNS)
_SKIPPED = ("skipped",)


class _Skip:
    """The state of every chain excluded by chain_filter; the hot loop sees it through ``pending``."""

    __slots__ = ()
    pending = _SKIPPED


_SKIP: Any = _Skip()
_FINAL = ("final",)


def _strict_encoder() -> tuple[Callable[..., bytes], Any]:
    """(encode, option): ``encode(values, None, option)`` is array_bytes that raises TypeError for anything but
    text, None and numbers, so the hot loop needs no per-row type check; datetimes go to _careful_hash."""
    if array_bytes is getattr(orjson, "dumps", None):
        return orjson.dumps, orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS

    def reference(values: tuple, _default: Any = None, _option: Any = None) -> bytes:
        return array_bytes(values)

    return reference, None


def _careful_hash(v: tuple) -> str:
    """The entry hash of a row the fast encoder refused: ts as an aware datetime (or a str subclass)."""
    ts = v[-1]
    if isinstance(ts, datetime):
        ts = utc_text(ts)  # raises for a naive datetime, as the writer would
    elif not isinstance(ts, str):
        return "not a canonical entry"  # an edited bundle: it cannot match its hash
    try:
        return hashlib.sha256(_ENTRY_PREFIX + array_bytes(tuple(
            str.__str__(x) if isinstance(x, str) else x for x in (*v[3:-1], ts)))).hexdigest()
    except TypeError:
        return "not a canonical entry"


_strict_bytes, _STRICT = _strict_encoder()


def _at(seq: int | None, chain: str, chain_seq: int) -> str:
    return f"entry {seq} (chain {chain} #{chain_seq})"


def _entries(lo: int, hi: int, verb: str) -> str:
    # verb in its plural form ("were deleted"); a single entry reads "entry #5 was deleted".
    if lo == hi:
        return f"entry #{lo} " + verb.replace("were", "was").replace("are", "is")
    return f"entries #{lo}..#{hi} {verb}"


class _Chain:
    __slots__ = ("name", "last", "exp", "exp_i", "next_exp", "verified_cs", "pending", "problem")

    def __init__(self, name: str, exp: list[tuple[int, str, int]]) -> None:
        self.name = name
        # The last accepted entry's row (seq, chain_seq, hash, prev_hash, ...): one store per accepted entry.
        self.last: tuple = (None, 0, GENESIS_HASH, None)
        self.exp = exp  # signed heads (chain_seq, hash, checkpoint seq), sorted
        self.exp_i = 0
        self.next_exp = exp[0][0] if exp else -1
        self.verified_cs = 0
        self.pending: tuple | None = None
        self.problem: Problem | None = None

    @property
    def seq(self) -> int | None:
        return self.last[0]

    @property
    def cs(self) -> int:
        return self.last[1]

    @property
    def hash(self) -> str:
        return self.last[2]

    @property
    def prev(self) -> str | None:
        return self.last[3]

    def fail(self, kind: ProblemKind, seq: int | None, chain_seq: int, message: str, *,
             checkpoint: int | None = None, pending: tuple = _FINAL) -> None:
        self.problem = Problem(kind, seq, self.name, chain_seq, checkpoint, message)
        self.pending = pending


def _as_key_map(public_keys: Any) -> dict[str, Ed25519PublicKey]:
    if isinstance(public_keys, Ed25519PublicKey):
        return {key_id(public_keys): public_keys}
    return dict(public_keys)


class Verifier:
    """Checkpoints first, then entries in seq order, then ``finish()``. See the module docstring."""

    def __init__(self, public_keys: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey, *,
                 chain_filter: Callable[[str], bool] | None = None,
                 known_checkpoint: tuple[int, str] | None = None, allow_redacted: bool = False,
                 segment: bool = False) -> None:
        self._keys = _as_key_map(public_keys)
        # Segment mode (parallel verification, see verify_segments): this verifier sees one contiguous seq
        # range of the trail; each chain starts where its first entry in the range says it does, and the
        # caller checks that the segments join up (stitch).
        self._segment = segment
        self._starts: dict[str, tuple[int, str]] = {}
        self._allow_redacted = allow_redacted  # exported bundles only: entries flagged "redacted"
        self._redacted = 0
        self._filter = chain_filter
        self._known = known_checkpoint
        self._chains: dict[str, Any] = {}
        self._expect: dict[str, list[tuple[int, str, int]]] = {}
        self._cp_seq = 0
        self._cp_prev_hash: str | None = GENESIS_HASH  # None: the previous one is missing
        self._cp_count = 0
        self._cp_problems: list[Problem] = []
        self._seq_problems: list[Problem] = []
        self._last_seq: int | float = float("-inf")
        self._entries = 0
        self._started = False
        self._finished = False

    # -- checkpoints ---------------------------------------------------------------------------------------

    def add_checkpoints(self, checkpoints: Iterable[Mapping[str, Any]]) -> None:
        for cp in checkpoints:
            self.add_checkpoint(cp)

    def add_checkpoint(self, cp: Mapping[str, Any]) -> None:
        if self._started or self._finished:
            raise RuntimeError("checkpoints must be given before the first entry")
        seq, body = cp["seq"], cp["body"]
        self._cp_count += 1
        if seq <= self._cp_seq:
            self._cp_problem(ProblemKind.CHECKPOINT_MISSING, seq, f"checkpoint {seq} comes after checkpoint "
                             f"{self._cp_seq}: the checkpoint trail is out of order")
            return
        if seq > self._cp_seq + 1:
            lo, hi = self._cp_seq + 1, seq - 1
            what = f"checkpoint {lo} is" if lo == hi else f"checkpoints {lo}..{hi} are"
            self._cp_problem(ProblemKind.CHECKPOINT_MISSING, lo, f"{what} missing (the trail jumps to {seq})")
            self._cp_prev_hash = None
        this_hash = checkpoint_hash(body)
        expected_prev, self._cp_prev_hash, self._cp_seq = self._cp_prev_hash, this_hash, seq
        if self._known is not None and self._known[0] == seq and self._known[1] != this_hash:
            self._cp_problem(ProblemKind.CHECKPOINT_MISSING, seq,
                             f"checkpoint {seq} is not the one recorded outside the database: it was replaced")
        parsed = self._signed_body(cp)
        if parsed is None:
            return
        if expected_prev is not None and parsed["prev"] != expected_prev:
            self._cp_problem(ProblemKind.CHECKPOINT_MISSING, seq,
                             f"checkpoint {seq} does not follow checkpoint {seq - 1}: its prev hash differs, "
                             "so a checkpoint between them was removed or checkpoint "
                             f"{seq - 1} was altered")
        flt = self._filter
        for chain, (chain_seq, head_hash) in parsed["heads"].items():
            if flt is None or flt(chain):
                self._expect.setdefault(chain, []).append((chain_seq, head_hash, seq))

    def _signed_body(self, cp: Mapping[str, Any]) -> dict[str, Any] | None:
        """The parsed body if the signature holds and the body is well formed; else records the problem."""
        seq, body, kid = cp["seq"], cp["body"], cp.get("key_id")
        key = self._keys.get(kid)  # type: ignore[arg-type]
        if key is None:
            self._cp_problem(ProblemKind.SIGNATURE_INVALID, seq,
                             f"checkpoint {seq} is signed with key {kid!r}, which is not a known public key")
            return None
        try:
            signature = base64.b64decode(cp["signature"], validate=True)
            # Only the canonical spelling: base64 ignores some trailing bits, an edit there must show too.
            if base64.b64encode(signature).decode() != cp["signature"]:
                raise ValueError("non-canonical base64")
            key.verify(signature, body.encode())
        except (InvalidSignature, binascii.Error, ValueError, TypeError, AttributeError):
            self._cp_problem(ProblemKind.SIGNATURE_INVALID, seq,
                             f"checkpoint {seq} fails its signature check: its body or signature was altered")
            return None
        try:
            parsed = json.loads(body)
            heads = parsed["heads"]
            well_formed = (
                parsed["type"] == CHECKPOINT_TYPE and parsed["seq"] == seq and parsed["key_id"] == kid
                and isinstance(parsed["prev"], str) and bool(_HEX64.match(parsed["prev"]))
                and isinstance(heads, dict)
                # (the body is signed: a head that is no hash simply never matches an entry's)
                and all(type(h[0]) is int and h[0] >= 1 and type(h[1]) is str and len(h) == 2
                        for h in heads.values())
            )
        except (ValueError, KeyError, TypeError, IndexError):
            well_formed = False
        if not well_formed:
            self._cp_problem(ProblemKind.SIGNATURE_INVALID, seq,
                             f"checkpoint {seq}: the signed body is not a checkpoint of this seq and key")
            return None
        row_ts = cp.get("ts")
        if row_ts is not None:
            text = utc_text(row_ts) if isinstance(row_ts, datetime) else str(row_ts)
            if text != parsed.get("ts"):
                self._cp_problem(ProblemKind.SIGNATURE_INVALID, seq,
                                 f"checkpoint {seq}: its ts column ({text}) differs from the signed time")
                return None
        return parsed

    def _cp_problem(self, kind: ProblemKind, seq: int, message: str) -> None:
        self._cp_problems.append(Problem(kind, None, None, None, seq, message))

    # -- entries -------------------------------------------------------------------------------------------

    def add_entry(self, entry: Mapping[str, Any]) -> None:
        self.add_entries((entry,))

    def add_entries(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Check entries (mappings with ENTRY_KEYS) given in ascending global seq order; keeps nothing per entry."""
        if not self._allow_redacted:
            self.add_rows(map(_ROW, entries))
            return
        flagged: set[int] = set()

        def rows() -> Iterable[tuple]:
            for entry in entries:
                flagged.clear()  # holds the current entry's seq only, when it is flagged
                if entry.get("redacted"):
                    flagged.add(entry["seq"])
                yield _ROW(entry)

        self.add_rows(rows(), redacted=flagged)

    def add_rows(self, rows: Iterable[tuple], *, redacted: set[int] | None = None) -> None:
        """Check entries given as tuples in ``VERIFY_COLUMNS`` order, ascending global seq.

        ``ts`` (last) is an aware datetime, or the canonical UTC text (as the database query formats it and
        bundles store it), which is hashed as given. ``redacted``: seqs whose content a bundle withholds.
        """
        if self._finished:
            raise RuntimeError("finish() was already called")
        self._started = True
        # Hot loop (a million rows): locals only, no call per row but the encoder and the hash.
        dumps, strict, prefix, sha = _strict_bytes, _STRICT, _ENTRY_PREFIX, hashlib.sha256
        chains, last, count = self._chains, self._last_seq, 0
        try:
            for v in rows:
                seq = v[0]
                if seq <= last:
                    self._out_of_order(seq, last, v)
                last = seq
                st = chains.get(v[4])
                if st is None:
                    st = self._open(v[4], v)
                pending = st.pending
                if pending is None:
                    count += 1
                    try:
                        # Text only (ts as its canonical text, as queries and bundles give it): the encoder
                        # refuses anything else (TypeError) and the row is hashed the careful way below.
                        computed = sha(prefix + dumps(v[3:], None, strict)).hexdigest()
                    except TypeError:
                        computed = _careful_hash(v)
                    n = v[1]
                    head = st.last
                    if computed == v[2] and v[3] == head[2] and n == head[1] + 1:
                        st.last = v
                        if n == st.next_exp:  # a checkpoint signed this position
                            exp, i = st.exp, st.exp_i
                            if exp[i][1] == computed and (i + 1 == len(exp) or exp[i + 1][0] != n):
                                st.verified_cs, st.exp_i = n, i + 1  # signed once, as computed: inline
                                st.next_exp = exp[i + 1][0] if i + 1 < len(exp) else -1
                            else:
                                self._signed_position(st, seq, n, computed)
                        continue
                    if computed != v[2] and redacted and seq in redacted:
                        # A blinded or de-identified export withholds this entry's values: its links and
                        # signed positions are still checked, its content cannot be.
                        self._redacted += 1
                        computed = v[2]
                        if v[3] == st.hash and n == st.cs + 1:
                            st.last = v
                            if n == st.next_exp:
                                self._signed_position(st, seq, n, computed)
                            continue
                    self._deviate(st, seq, n, v[2], v[3], computed)
                elif pending is not _SKIPPED:
                    count += 1
                    if pending is not _FINAL:
                        self._refine(st, seq, v[1], v[2], v[3])
        finally:
            self._last_seq = last
            self._entries += count

    def _open(self, chain: str, first: tuple) -> Any:
        if self._filter is not None and not self._filter(chain):
            self._chains[chain] = _SKIP
            return _SKIP
        exp = sorted(self._expect.pop(chain, ()))
        st = self._chains[chain] = _Chain(chain, exp)
        if self._segment and type(first[1]) is int and first[1] > 1:
            # Taken on trust here, proved by stitch(): the previous segment must end on exactly this link.
            st.last = (None, first[1] - 1, first[3], None)
            self._starts[chain] = (st.cs, st.hash)
            while st.exp_i < len(exp) and exp[st.exp_i][0] <= st.cs:
                st.exp_i += 1  # signed positions before this segment belong to an earlier one
            st.next_exp = exp[st.exp_i][0] if st.exp_i < len(exp) else -1
        return st

    def _out_of_order(self, seq: int, last: Any, v: tuple) -> None:
        if not self._seq_problems:
            self._seq_problems.append(Problem(
                ProblemKind.REORDERED, seq, v[4], v[1], None,
                f"{_at(seq, v[4], v[1])} comes after entry {last}: the log is not in seq order"))

    def _signed_position(self, st: _Chain, seq: int, n: int, computed: str) -> None:
        exp, i = st.exp, st.exp_i
        while i < len(exp) and exp[i][0] == n:
            _, signed, cp = exp[i]
            i += 1
            if signed != computed:
                st.fail(ProblemKind.CHANGED, seq, n,
                        f"{_at(seq, st.name, n)} does not match the hash checkpoint {cp} signed for #{n}: "
                        f"the chain was rewritten after #{st.verified_cs} and re-hashed",
                        checkpoint=cp, pending=("cp", seq, n, st.prev, signed, cp))
                break
            st.verified_cs = n
        st.exp_i = i
        st.next_exp = exp[i][0] if i < len(exp) else -1

    def _deviate(self, st: _Chain, seq: int, n: int, stored: str, prev: str, computed: str) -> None:
        name, cs = st.name, st.cs
        if computed != stored:
            st.fail(ProblemKind.CHANGED, seq, n,
                    f"{_at(seq, name, n)} was changed: its content does not match its hash")
        elif n == cs + 1:
            if cs and prev == st.prev and st.verified_cs < cs:
                st.fail(ProblemKind.INSERTED, st.seq, cs,
                        f"{_at(st.seq, name, cs)} was inserted: the next entry {seq} (#{n}) is chained "
                        f"directly to #{cs - 1}, so #{cs} was not there when it was written")
            elif cs and prev == st.prev:
                st.fail(ProblemKind.INSERTED, seq, n,
                        f"{_at(seq, name, n)} was inserted: it claims the same predecessor as #{cs}, "
                        "which a checkpoint confirmed")
            elif cs == 0:
                st.fail(ProblemKind.MISSING, seq, 1,
                        f"entries before {_at(seq, name, n)} are missing: it does not start from the genesis hash")
            else:
                st.fail(ProblemKind.CHANGED, st.seq, cs,
                        f"{_at(st.seq, name, cs)} was changed: the next entry {seq} (#{n}) was chained to a "
                        f"different hash for it (or an entry between them was deleted and the rest renumbered)")
        elif n > cs + 1:
            if prev == st.hash:
                st.fail(ProblemKind.CHANGED, seq, n,
                        f"{_at(seq, name, n)} was renumbered: it is chained to #{cs}, so it must be #{cs + 1}",
                        pending=("gap_linked", cs, n, prev, seq))
            else:
                st.fail(ProblemKind.MISSING, seq, cs + 1,
                        f"chain {name}: {_entries(cs + 1, n - 1, 'are missing')} before {_at(seq, name, n)} "
                        "(deleted from the middle of the chain)",
                        pending=("gap_broken", cs, n, seq))
        elif prev == st.hash:
            st.fail(ProblemKind.CHANGED, seq, n,
                    f"{_at(seq, name, n)} was renumbered: it is chained to #{cs}, so it must be #{cs + 1}")
        elif n == cs and prev == st.prev and st.verified_cs < cs:
            st.fail(ProblemKind.INSERTED, seq, n,
                    f"{_at(seq, name, n)} was inserted: entry {st.seq} is #{n} too, with the same predecessor",
                    pending=("fork", st.seq, cs, seq, stored))
        else:
            st.fail(ProblemKind.INSERTED, seq, n,
                    f"{_at(seq, name, n)} was inserted: the chain had already reached #{cs} at entry {st.seq}")

    def _refine(self, st: _Chain, seq: int, n: int, stored: str, prev: str) -> None:
        p, name = st.pending, st.name
        assert p is not None
        if p[0] == "cp":
            _, x_seq, x_cs, x_prev, signed, cp = p
            # The signed entry reappears right after X, or X and this entry share a parent: X was inserted.
            if stored == signed or prev == x_prev:
                st.fail(ProblemKind.INSERTED, x_seq, x_cs,
                        f"{_at(x_seq, name, x_cs)} was inserted: checkpoint {cp} signed a different #{x_cs}, "
                        f"which now follows it as entry {seq}", checkpoint=cp)
            st.pending = _FINAL
        elif p[0] == "fork":
            _, x_seq, x_cs, e_seq, e_hash = p
            if prev == e_hash:
                st.fail(ProblemKind.INSERTED, x_seq, x_cs,
                        f"{_at(x_seq, name, x_cs)} was inserted: the chain continues from entry {e_seq}, the "
                        f"other #{x_cs}")
            st.pending = _FINAL
        elif p[0] == "gap_linked":
            _, lo, hi, e_prev, e_seq = p
            if lo < n < hi and prev == e_prev:
                st.fail(ProblemKind.INSERTED, seq, n,
                        f"{_at(seq, name, n)} was inserted: entry {e_seq} (#{hi}) is chained directly to #{lo}")
        elif p[0] == "gap_broken":
            _, lo, hi, e_seq = p
            if lo < n < hi:
                st.fail(ProblemKind.REORDERED, e_seq, hi,
                        f"{_at(e_seq, name, hi)} and entry {seq} (#{n}) are out of order: #{n} must come "
                        f"first, their seq positions were swapped")

    # -- result --------------------------------------------------------------------------------------------

    def finish(self) -> VerifyReport:
        self._finished = True
        if self._known is not None and self._cp_seq < self._known[0]:
            self._cp_problem(ProblemKind.CHECKPOINT_MISSING, self._cp_seq + 1,
                             f"checkpoints {self._cp_seq + 1}..{self._known[0]} are missing: checkpoint "
                             f"{self._known[0]} was recorded outside the database")
        entry_problems = list(self._seq_problems)
        truncations: list[Problem] = []
        chains = 0
        for st in self._chains.values():
            if st is _SKIP:
                continue
            chains += 1
            if st.problem is not None:
                entry_problems.append(st.problem)
            elif st.exp_i < len(st.exp):
                truncations.append(self._truncated(st.name, st.cs, st.seq, st.exp[-1]))
        for chain, exp in self._expect.items():  # signed chains with no entry left at all
            truncations.append(self._truncated(chain, 0, None, max(exp)))
        entry_problems.sort(key=lambda p: p.seq)
        truncations.sort(key=lambda p: (p.checkpoint, p.chain))
        ordered = [*self._cp_problems, *entry_problems, *truncations]
        problem = ordered[0] if ordered else None
        return VerifyReport(problem is None, self._entries, self._cp_count, chains, problem, self._redacted)

    @staticmethod
    def _truncated(chain: str, cs: int, seq: int | None, signed: tuple[int, str, int]) -> Problem:
        m, _, cp = signed
        where = f"ends at #{cs} (entry {seq})" if cs else "has no entries"
        return Problem(ProblemKind.TRUNCATED, None, chain, cs + 1, cp,
                       f"chain {chain} {where}, but checkpoint {cp} signed its head at #{m}: "
                       f"{_entries(cs + 1, m, 'were deleted')}")


@dataclass(frozen=True, slots=True)
class Segment:
    """What one verifier in segment mode proved about its contiguous seq range (picklable, small)."""

    ok: bool  # every entry in the range checked out, given the starting links in ``starts``
    entries: int
    starts: dict[str, tuple[int, str]]  # chain -> (chain_seq, hash) it was taken to start after
    heads: dict[str, tuple[int, str]]  # chain -> (chain_seq, hash) of its last entry in the range


def segment_result(verifier: Verifier) -> Segment:
    """Finish a segment-mode verifier: ``ok`` only when nothing in its range deviated."""
    if not verifier._segment:
        raise ValueError("not a segment verifier")
    verifier._finished = True
    chains = [st for st in verifier._chains.values() if st is not _SKIP]
    ok = not verifier._cp_problems and not verifier._seq_problems and all(st.problem is None for st in chains)
    return Segment(ok, verifier._entries, dict(verifier._starts), {st.name: (st.cs, st.hash) for st in chains})


def stitch(segments: Iterable[Segment], checkpoint_heads: Mapping[str, int]) -> tuple[bool, int]:
    """Whether consecutive segments join into whole chains and reach every signed head.

    Every segment checked its own entries, its links and the signed positions inside its range, starting
    each chain from the link its first entry claims. The trail is intact when each such claimed start is the
    previous segment's head of that chain (the genesis hash at #0 for a new chain) and no chain ends before a
    position a checkpoint signed (``checkpoint_heads``: chain -> highest signed chain_seq). Returns (intact,
    number of chains). When it is not intact the sequential Verifier names the problem.
    """
    heads: dict[str, tuple[int, str]] = {}
    for seg in segments:
        if not seg.ok:
            return False, 0
        for chain, start in seg.starts.items():
            if heads.get(chain, (0, GENESIS_HASH)) != start:
                return False, 0
        for chain in seg.heads.keys() - seg.starts.keys():
            if chain in heads:  # started from genesis here, but an earlier segment already had entries of it
                return False, 0
        heads.update(seg.heads)
    for chain, signed in checkpoint_heads.items():
        if heads.get(chain, (0, ""))[0] < signed:
            return False, 0
    return True, len(heads)


def signed_heads(verifier: Verifier) -> dict[str, int]:
    """chain -> the highest chain_seq any checkpoint signed (for stitch), from a verifier given checkpoints."""
    return {chain: max(e[0] for e in exp) for chain, exp in verifier._expect.items()
            if verifier._filter is None or verifier._filter(chain)}


def verify_segment(rows: Iterable[tuple], checkpoints: Iterable[Mapping[str, Any]],
                   public_keys: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey,
                   chain_filter: Callable[[str], bool] | None = None) -> Segment:
    """Check one contiguous seq range of the trail (rows in VERIFY_COLUMNS order); see verify_in_segments."""
    verifier = Verifier(public_keys, chain_filter=chain_filter, segment=True)
    verifier.add_checkpoints(checkpoints)
    verifier.add_rows(rows)
    return segment_result(verifier)


def verify_in_segments(checkpoints: Iterable[Mapping[str, Any]],
                       public_keys: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey,
                       segments: Callable[[], Iterable[Segment]], *,
                       chain_filter: Callable[[str], bool] | None = None,
                       known_checkpoint: tuple[int, str] | None = None) -> VerifyReport | None:
    """Verify a trail split into contiguous seq ranges checked independently (in parallel, by the caller).

    ``segments()`` returns the ``verify_segment`` results of the ranges, in seq order. Returns the report of an
    intact trail, identical to the sequential Verifier's; or None when anything is wrong, in which case the
    caller runs the sequential Verifier, which names the first problem (a damaged trail is the rare case;
    this proves an intact one quickly and leaves all diagnosis in one place).
    """
    head = Verifier(public_keys, chain_filter=chain_filter, known_checkpoint=known_checkpoint)
    head.add_checkpoints(checkpoints)
    if head._cp_problems or (known_checkpoint is not None and head._cp_seq < known_checkpoint[0]):
        return None
    results = list(segments())
    intact, chains = stitch(results, signed_heads(head))
    if not intact:
        return None
    return VerifyReport(True, sum(seg.entries for seg in results), head._cp_count, chains, None)


def verify_entries(entries: Iterable[Mapping[str, Any]], checkpoints: Iterable[Mapping[str, Any]],
                   public_key: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey,
                   chain_filter: Callable[[str], bool] | None = None, *,
                   known_checkpoint: tuple[int, str] | None = None) -> VerifyReport:
    """Verify a whole trail: checkpoints are read first, entries then streamed in seq order."""
    verifier = Verifier(public_key, chain_filter=chain_filter, known_checkpoint=known_checkpoint)
    verifier.add_checkpoints(checkpoints)
    verifier.add_entries(entries)
    return verifier.finish()
