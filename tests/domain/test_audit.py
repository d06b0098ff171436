"""The audit trail core: canonical encoding, chaining, checkpoints, and every kind of tampering detected."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trialmgr.domain import audit
from trialmgr.domain.audit import (
    GENESIS_HASH,
    ChainHead,
    canonical_bytes,
    checkpoint_hash,
    entry_hash,
    make_checkpoint,
    next_entry,
)
from trialmgr.domain.audit_verify import Verifier, trial_filter, verify_entries

KEY = audit.generate_signing_key()
PUB = KEY.public_key()
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)

# -- building logs --------------------------------------------------------------------------------------------


def fields(chain: str, i: int) -> dict:
    trial = chain.split("/")[0] if not chain.startswith("_system") else None
    participant = chain.split("/p/")[1] if "/p/" in chain else None
    return {
        "chain": chain, "trial": trial, "ts": T0 + dt.timedelta(seconds=i, microseconds=i * 7),
        "actor_user": "ana", "actor_role": "coordinator", "actor_site": "DE", "action": "form_value:update",
        "entity_type": "form_value", "entity_id": str(1000 + i), "participant": participant,
        "field": "nprs_back", "old_value": str(i % 11), "new_value": str((i + 1) % 11),
        "reason": "correction" if i % 3 else None, "request_id": f"req-{i}", "client_addr": "127.0.0.1",
    }


def build_log(chain_order: list[str], checkpoint_after: set[int] = frozenset()) -> tuple[list, list]:
    """Entries appended to the given chains in order; a checkpoint after the entries at those indexes."""
    heads: dict[str, ChainHead] = {}
    moved: set[str] = set()
    entries, cps = [], []
    prev_cp = GENESIS_HASH
    for i, chain in enumerate(chain_order):
        row = next_entry(heads.get(chain), fields(chain, i))
        row["seq"] = i + 1
        entries.append(row)
        heads[chain] = ChainHead(chain, row["chain_seq"], row["hash"])
        moved.add(chain)
        if i in checkpoint_after:
            cp = make_checkpoint(KEY, len(cps) + 1, T0 + dt.timedelta(seconds=i, microseconds=500),
                                 {c: (heads[c].chain_seq, heads[c].hash) for c in moved}, prev_cp)
            cps.append(cp)
            prev_cp = checkpoint_hash(cp["body"])
            moved.clear()
    return entries, cps


A, B, C = "hip-pt-clbp/p/DE-0007", "hip-pt-clbp/p/PA-0002", "hip-pt-clbp/trial"
U, M = "_system/user/ana", "mash/p/NC-0001"
ORDER = [A, B, A, C, A, B, U, A, M, B, A, C, A, B, A, M]  # A holds #1..#7 at indexes 0,2,4,7,10,12,14


def reseq(entries: list) -> list:
    for i, e in enumerate(entries):
        e["seq"] = i + 1
    return entries


def chain_at(entries: list, chain: str, chain_seq: int) -> dict:
    return next(e for e in entries if e["chain"] == chain and e["chain_seq"] == chain_seq)


def verify(entries, cps, **kw):
    return verify_entries(entries, cps, PUB, **kw)


# -- canonical encoding --------------------------------------------------------------------------------------


def test_canonical_bytes_is_deterministic_and_compact():
    a = {"b": 1, "a": [None, True, "x"], "c": {"z": "1", "y": Decimal("2.50")}}
    b = {"c": {"y": Decimal("2.50"), "z": "1"}, "a": [None, True, "x"], "b": 1}
    assert canonical_bytes(a) == canonical_bytes(b) == b'{"a":[null,true,"x"],"b":1,"c":{"y":"2.50","z":"1"}}'


def test_canonical_bytes_keeps_unicode_as_utf8_and_escapes_controls():
    assert canonical_bytes({"n": "Müller – 北京"}) == '{"n":"Müller – 北京"}'.encode()
    assert canonical_bytes(["a\"b\\c\n"]) == b'["a\\"b\\\\c\\n"]'


def test_canonical_bytes_times_in_utc_with_microseconds():
    cet = dt.timezone(dt.timedelta(hours=1))
    assert canonical_bytes([dt.datetime(2024, 3, 1, 13, 0, tzinfo=cet)]) == b'["2024-03-01T12:00:00.000000Z"]'
    assert canonical_bytes([dt.date(2024, 3, 1)]) == b'["2024-03-01"]'
    assert audit.utc_text(dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)) == "1969-12-31T23:59:59.999999Z"


@pytest.mark.parametrize("bad", [dt.datetime(2024, 3, 1, 12, 0), {"x": [1.5]}, 0.0, {1: "a"}, {"s": {1, 2}}])
def test_canonical_bytes_refuses_naive_datetimes_floats_and_odd_types(bad):
    with pytest.raises(ValueError):
        canonical_bytes(bad)


def test_entry_hash_known_answer_freezes_the_format():
    e = fields(A, 0) | {"ts": dt.datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC), "entity_id": "17",
                        "old_value": "5", "new_value": "6", "reason": "Übertragungsfehler", "request_id": "r1"}
    assert audit.entry_bytes(GENESIS_HASH, e).startswith(b'trialmgr-audit-entry-v1\n["' + b"0" * 64)
    assert entry_hash(GENESIS_HASH, e) == "abb7b6b94466ad3a46499da51ad54abe596e394273768535bb1e380b2c542db5"
    # The same instant as text (an exported bundle) hashes the same.
    assert entry_hash(GENESIS_HASH, e | {"ts": "2024-03-01T12:00:00.123456Z"}) == entry_hash(GENESIS_HASH, e)


# -- chaining ------------------------------------------------------------------------------------------------


def test_next_entry_chains_hashes_and_numbers():
    first = next_entry(None, fields(A, 0))
    assert (first["chain_seq"], first["prev_hash"]) == (1, GENESIS_HASH)
    assert first["hash"] == entry_hash(GENESIS_HASH, first)
    second = next_entry(ChainHead(A, 1, first["hash"]), fields(A, 1))
    assert (second["chain_seq"], second["prev_hash"]) == (2, first["hash"])
    assert "seq" not in second  # the database assigns it


@pytest.mark.parametrize("change", [
    {"ts": dt.datetime(2024, 1, 1)}, {"ts": "2024-01-01 00:00"}, {"bogus": "x"}, {"old_value": 5},
    {"chain": ""},
])
def test_next_entry_refuses_bad_fields(change):
    with pytest.raises(ValueError):
        next_entry(None, fields(A, 0) | change)


def test_next_entry_refuses_a_head_of_another_chain():
    with pytest.raises(ValueError, match="chain"):
        next_entry(ChainHead(B, 1, "a" * 64), fields(A, 0))


# -- keys and checkpoints ------------------------------------------------------------------------------------


def test_checkpoint_verifies_with_only_the_public_key_from_pem():
    key = audit.load_private_key_pem(audit.private_key_to_pem(audit.generate_signing_key()))
    entries, _ = build_log(ORDER)
    heads = {e["chain"]: (e["chain_seq"], e["hash"]) for e in entries}
    cp = make_checkpoint(key, 1, T0, heads, GENESIS_HASH)
    pub = audit.load_public_key_pem(audit.public_key_pem(key.public_key()))
    assert cp["key_id"] == audit.key_id(pub) == audit.key_id(key) and len(cp["key_id"]) == 16
    body = json.loads(cp["body"])
    assert body["heads"][A] == [7, heads[A][1]] and body["prev"] == GENESIS_HASH and body["seq"] == 1
    assert canonical_bytes(body) == cp["body"].encode()
    report = verify_entries(entries, [cp], pub)
    assert report.ok and report.checkpoints == 1
    assert not verify_entries(entries, [cp], PUB).ok  # another instance's key proves nothing


def test_clean_log_verifies_with_counts():
    entries, cps = build_log(ORDER, {5, 11, 15})
    report = verify(entries, cps)
    assert report.ok and report.problem is None
    assert (report.entries, report.checkpoints, report.chains) == (16, 3, 5)


def test_entries_stream_through_add_entry_and_checkpoints_must_come_first():
    entries, cps = build_log(ORDER, {15})
    v = Verifier({audit.key_id(PUB): PUB})
    v.add_checkpoint(cps[0])
    for e in entries:
        v.add_entry(e)
    with pytest.raises(RuntimeError):
        v.add_checkpoint(cps[0])
    assert v.finish().ok


def test_chain_filter_restricts_to_one_trial():
    entries, cps = build_log(ORDER, {15})
    chain_at(entries, M, 1)["new_value"] = "tampered"  # in the other trial
    report = verify(entries, cps, chain_filter=trial_filter("hip-pt-clbp"))
    assert report.ok and report.entries == 13 and report.chains == 3
    assert verify(entries, cps).problem.kind == "changed"


# -- every kind of tampering, named ----------------------------------------------------------------------------


def test_changed_content():
    entries, cps = build_log(ORDER, {15})
    target = chain_at(entries, A, 4)
    target["new_value"] = "9"
    p = verify(entries, cps).problem
    assert (p.kind, p.seq, p.chain, p.chain_seq) == ("changed", target["seq"], A, 4)
    assert p.message == f"entry {target['seq']} (chain {A} #4) was changed: its content does not match its hash"


def test_changed_and_rehashed_tail_caught_by_the_checkpoint():
    entries, cps = build_log(ORDER, {15})
    for e in [e for e in entries if e["chain"] == A and e["chain_seq"] >= 3]:  # consistent rewrite
        if e["chain_seq"] == 3:
            e["new_value"] = "9"
        e["prev_hash"] = chain_at(entries, A, e["chain_seq"] - 1)["hash"]
        e["hash"] = entry_hash(e["prev_hash"], e)
    p = verify(entries, cps).problem
    assert (p.kind, p.chain, p.chain_seq, p.checkpoint) == ("changed", A, 7, 1)
    assert verify(entries, []).ok  # without a checkpoint this rewrite is invisible, as documented


def test_missing_entry_from_the_middle():
    entries, cps = build_log(ORDER)
    gone, after = chain_at(entries, A, 3), chain_at(entries, A, 4)
    entries.remove(gone)
    p = verify(entries, cps).problem
    assert (p.kind, p.seq, p.chain, p.chain_seq) == ("missing", after["seq"], A, 3)


@pytest.mark.parametrize("placed", ["in_place", "at_end"])
@pytest.mark.parametrize("checkpointed", [False, True])
def test_inserted_entry_with_valid_hash_and_renumbered_successors(placed, checkpointed):
    entries, cps = build_log(ORDER, {15} if checkpointed else set())
    before = chain_at(entries, A, 3)
    forged = next_entry(ChainHead(A, 3, before["hash"]), fields(A, 99))
    for e in entries:
        if e["chain"] == A and e["chain_seq"] > 3:
            e["chain_seq"] += 1
    entries.insert(entries.index(before) + 1 if placed == "in_place" else len(entries), forged)
    reseq(entries)
    p = verify(entries, cps).problem
    assert (p.kind, p.seq, p.chain, p.chain_seq) == ("inserted", forged["seq"], A, 4)


def test_reordered_entries_of_one_chain():
    entries, cps = build_log(ORDER, {15})
    i, j = entries.index(chain_at(entries, A, 3)), entries.index(chain_at(entries, A, 5))
    entries[i], entries[j] = entries[j], entries[i]
    reseq(entries)
    p = verify(entries, cps).problem
    assert (p.kind, p.seq, p.chain, p.chain_seq) == ("reordered", i + 1, A, 5)


def test_truncated_tail_after_a_checkpoint():
    entries, cps = build_log(ORDER, {15})
    for k in (6, 7):
        entries.remove(chain_at(entries, A, k))
    p = verify(entries, cps).problem
    assert (p.kind, p.seq, p.chain, p.chain_seq, p.checkpoint) == ("truncated", None, A, 6, 1)
    assert "entries #6..#7 were deleted" in p.message
    entries = [e for e in entries if e["chain"] != M]  # a whole chain gone
    assert verify(entries, cps).problem.chain == A  # A's is found first; M's too:
    assert verify([e for e in build_log(ORDER, {15})[0] if e["chain"] != M], cps).problem.chain == M


@pytest.mark.parametrize("how", ["body", "signature", "key"])
def test_signature_invalid(how):
    entries, cps = build_log(ORDER, {5, 11, 15})
    cp = cps[1]
    if how == "body":
        cp["body"] = cp["body"].replace('"seq":2', '"seq":2 ')
    elif how == "signature":
        sig = bytearray(base64.b64decode(cp["signature"]))
        sig[0] ^= 1
        cp["signature"] = base64.b64encode(bytes(sig)).decode()
    else:
        cp["key_id"] = "0123456789abcdef"
    p = verify(entries, cps).problem
    assert (p.kind, p.checkpoint, p.seq) == ("signature_invalid", 2, None)


def test_checkpoint_missing_from_the_checkpoint_chain():
    entries, cps = build_log(ORDER, {5, 11, 15})
    p = verify(entries, [cps[0], cps[2]]).problem
    assert (p.kind, p.checkpoint) == ("checkpoint_missing", 2)
    # The newest checkpoint is only missed against a copy held outside the database.
    known = (3, checkpoint_hash(cps[2]["body"]))
    assert verify(entries, cps[:2]).ok
    p = verify(entries, cps[:2], known_checkpoint=known).problem
    assert (p.kind, p.checkpoint) == ("checkpoint_missing", 3)
    assert verify(entries, cps, known_checkpoint=known).ok


def test_checkpoint_prev_link_broken():
    entries, cps = build_log(ORDER, {5, 11, 15})
    heads = json.loads(cps[2]["body"])["heads"]
    forged = make_checkpoint(KEY, 3, T0, {c: tuple(h) for c, h in heads.items()}, "f" * 64)
    p = verify(entries, [*cps[:2], forged]).problem
    assert (p.kind, p.checkpoint) == ("checkpoint_missing", 3)


def test_first_problem_in_seq_order_is_reported():
    entries, cps = build_log(ORDER, {15})
    late, early = chain_at(entries, A, 6), chain_at(entries, B, 2)
    late["reason"] = "x"
    early["reason"] = "x"
    assert verify(entries, cps).problem.seq == early["seq"]


# -- property: any single tampering is detected, an untouched log never is ---------------------------------------

ENTRY_KINDS = ["changed", "changed_rehash", "renumbered", "duplicated", "missing", "inserted", "inserted_late",
               "reordered", "truncated"]
CP_KINDS = ["signature_invalid", "checkpoint_missing"]


def tamper(rng: random.Random, kind: str, entries: list, cps: list) -> tuple[set, int | None, dict]:
    """Apply one tampering; returns (acceptable kinds, named seq or None, verify kwargs); raises LookupError
    when this log offers no position where the kind is detectable by design."""
    by_chain: dict[str, list] = {}
    for e in entries:
        by_chain.setdefault(e["chain"], []).append(e)
    signed: dict[str, int] = {}
    for cp in cps:
        for chain, (cs, _) in json.loads(cp["body"])["heads"].items():
            signed[chain] = max(signed.get(chain, 0), cs)
    with_next = [e for c in by_chain.values() for e in c[:-1]]
    if kind == "changed":
        e = rng.choice(entries)
        name = rng.choice(["new_value", "actor_user", "chain", "prev_hash", "hash", "ts"])
        e[name] = e[name] + dt.timedelta(microseconds=1) if name == "ts" else (e[name] or "") + "x"
        return {"changed"}, e["seq"], {}
    if kind == "renumbered":  # chain_seq is not hashed, but it must agree with the links
        e = rng.choice(entries)
        e["chain_seq"] += rng.choice([-1, 1, 3])
        return {"changed"}, e["seq"], {}
    if kind == "duplicated":
        e = copy.deepcopy(rng.choice(entries))
        entries.append(e)
        reseq(entries)
        return {"inserted"}, e["seq"], {}
    if kind == "changed_rehash":  # detectable only with a successor or a signature over it
        cands = [e for e in entries if e in with_next or e["chain_seq"] <= signed.get(e["chain"], 0)]
        e = rng.choice(cands) if cands else None
        if e is None:
            raise LookupError
        e["new_value"] = "forged"
        e["hash"] = entry_hash(e["prev_hash"], e)
        return {"changed", "inserted"}, None, {}
    if kind in ("missing", "inserted", "inserted_late"):
        if not with_next:
            raise LookupError
        e = rng.choice(with_next)
        after = by_chain[e["chain"]][e["chain_seq"]]  # its successor (chain_seq is 1-based)
        if kind == "missing":
            entries.remove(e)  # it has a successor, so this is the middle (or the start) of its chain
            return {"missing"}, after["seq"], {}
        forged = next_entry(ChainHead(e["chain"], e["chain_seq"], e["hash"]), fields(e["chain"], 500))
        for later in by_chain[e["chain"]][e["chain_seq"]:]:
            later["chain_seq"] += 1
        entries.insert(entries.index(e) + 1 if kind == "inserted" else len(entries), forged)
        reseq(entries)
        return {"inserted"}, forged["seq"], {}
    if kind == "reordered":
        chains = [c for c in by_chain.values() if len(c) >= 2]
        if not chains:
            raise LookupError
        x, y = sorted(rng.sample(range(len(chain := rng.choice(chains))), 2))
        i, j = entries.index(chain[x]), entries.index(chain[y])
        entries[i], entries[j] = entries[j], entries[i]
        reseq(entries)
        return {"reordered"}, i + 1, {}
    if kind == "truncated":
        cands = [c for c, cs in signed.items() if cs >= 1]
        if not cands:
            raise LookupError
        chain = rng.choice(cands)
        cut = rng.randint(1, signed[chain])  # delete #cut..end, reaching a signed head
        for e in by_chain[chain][cut - 1:]:
            entries.remove(e)
        return {"truncated"}, None, {}
    if not cps:
        raise LookupError
    k = rng.randrange(len(cps))
    if kind == "signature_invalid":
        cp = cps[k]
        field = rng.choice(["body", "signature", "key_id"])
        cp[field] = cp[field].replace(cp[field][-3], "A" if cp[field][-3] != "A" else "B")
        return {"signature_invalid"}, None, {}
    known = (len(cps), checkpoint_hash(cps[-1]["body"]))
    del cps[k]
    return {"checkpoint_missing"}, None, {"known_checkpoint": known}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chain_count=st.integers(1, 4),
    length=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(ENTRY_KINDS + CP_KINDS),
)
def test_any_single_tampering_is_detected(chain_count, length, seed, kind):
    check_single_tampering(chain_count, length, seed, kind)


def check_single_tampering(chain_count: int, length: int, seed: int, kind: str) -> None:
    rng = random.Random(seed)
    names = [A, B, C, U][:chain_count]
    order = [rng.choice(names) for _ in range(length)]
    marks = {i for i in range(length) if rng.random() < 0.15} | ({length - 1} if rng.random() < 0.5 else set())
    entries, cps = build_log(order, marks)
    clean = verify(entries, cps, known_checkpoint=(len(cps), checkpoint_hash(cps[-1]["body"])) if cps else None)
    assert clean.ok, clean.problem
    assert (clean.entries, clean.checkpoints, clean.chains) == (length, len(cps), len(set(order)))
    entries, cps = copy.deepcopy(entries), copy.deepcopy(cps)
    try:
        expected, named, kw = tamper(rng, kind, entries, cps)
    except LookupError:
        return
    report = verify(entries, cps, **kw)
    assert not report.ok, f"{kind} not detected"
    assert report.problem.kind in expected, report.problem
    if named is not None:
        assert report.problem.seq == named, report.problem


# -- verification in parallel segments ------------------------------------------------------------------------


def segmented(entries: list, cps: list, cuts: list[int], **kw):
    """verify_in_segments over entries split at the given indexes (each segment checked on its own)."""
    from trialmgr.domain.audit_verify import VERIFY_COLUMNS, verify_in_segments, verify_segment

    rows = [tuple(e[c] for c in VERIFY_COLUMNS) for e in entries]
    bounds = [0, *sorted(set(cuts)), len(rows)]
    flt = kw.get("chain_filter")
    return verify_in_segments(
        cps, PUB, lambda: [verify_segment(rows[a:b], cps, PUB, flt) for a, b in zip(bounds, bounds[1:])], **kw)


def test_segments_of_a_clean_log_give_the_sequential_report():
    entries, cps = build_log(ORDER * 3, {5, 20, 47})
    sequential = verify(entries, cps)
    for cuts in ([], [1], [7, 8], [3, 17, 30, 31, 47]):
        assert segmented(entries, cps, cuts) == sequential
    one_trial = verify(entries, cps, chain_filter=trial_filter("mash"))
    assert segmented(entries, cps, [10, 30], chain_filter=trial_filter("mash")) == one_trial


def test_segments_refuse_a_start_that_the_previous_segment_does_not_end_on():
    # A#3 deleted, A#4.. keep their links: wherever the cut falls, each segment alone may look whole (the one
    # after the cut starts on A#4's claimed link), but the segments do not join up.
    entries, _ = build_log(ORDER * 2)
    del entries[4]
    assert not verify(reseq(entries), []).ok
    for cut in range(1, len(entries)):
        assert segmented(entries, [], [cut]) is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chain_count=st.integers(1, 4),
    length=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(ENTRY_KINDS + CP_KINDS),
    cuts=st.lists(st.integers(0, 40), max_size=4),
)
def test_segments_agree_with_the_sequential_verifier_on_any_single_tampering(chain_count, length, seed, kind, cuts):
    rng = random.Random(seed)
    names = [A, B, C, U][:chain_count]
    order = [rng.choice(names) for _ in range(length)]
    marks = {i for i in range(length) if rng.random() < 0.15} | ({length - 1} if rng.random() < 0.5 else set())
    entries, cps = build_log(order, marks)
    known = (len(cps), checkpoint_hash(cps[-1]["body"])) if cps else None
    cuts = [c for c in cuts if c < length]
    assert segmented(entries, cps, cuts, known_checkpoint=known) == verify(entries, cps, known_checkpoint=known)
    try:
        _expected, _named, kw = tamper(rng, kind, entries, cps)
    except LookupError:
        return
    cuts = [c for c in cuts if c < len(entries)]
    # A damaged trail never passes in segments: the caller then runs the sequential Verifier to name it.
    assert not verify(entries, cps, **kw).ok
    assert segmented(entries, cps, cuts, **kw) is None


def test_the_fast_entry_encoder_writes_the_reference_bytes_for_every_character():
    # audit.array_bytes (orjson when it agrees) must equal the stdlib canonical encoding byte for byte, or
    # hashes written by one and checked by the other would differ. Every code point but lone surrogates.
    every = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
    values = (every, None, "", "\u2028", "a\"b\\c\x00\x1f\x7f")
    assert audit.array_bytes(values) == canonical_bytes(list(values))
    assert audit.array_bytes(values) == audit._make_array_bytes()(values)
