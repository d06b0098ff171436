"""Audit-trail verification speed against its floor: SHA-256 over the same canonical bytes.

    .venv/bin/python bench/bench_audit_verify.py [--entries 1000000] [--runs 3]

Builds a realistic trail in memory (rows as the database returns them: aware UTC datetimes, text columns,
entries in bursts of one form save each, spread over participant, trial and user chains, a signed
checkpoint every few thousand entries), then reports the median of several runs of:

* verify: ``Verifier`` over every entry and checkpoint (what a monitor runs);
* floor:  ``hashlib.sha256(b).hexdigest()`` over the exact bytes each entry hash covers, pre-encoded.

The ratio verify/floor is the figure that counts (target <= 3x).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trialmgr.domain import audit  # noqa: E402
from trialmgr.domain.audit_verify import Verifier  # noqa: E402

TRIALS = ("hip-pt-clbp", "mash")
SITES = ("DE", "PA", "NC")
FIELDS = ("nprs_back", "nprs_hip", "qbpds_01", "qbpds_02", "qbpds_03", "gait_usual_s", "tug_s", "six_mwt_m",
          "chair_stand_30s", "hip_abd_l_n", "hip_abd_r_n", "phq9_total", "eq5d_vas")
ROLES = ("coordinator", "assessor", "investigator")


def build_trail(n: int, seed: int = 7) -> tuple[list[dict], list[dict], object]:
    rng = random.Random(seed)
    key = audit.generate_signing_key()
    heads: dict[str, audit.ChainHead] = {}
    moved: set[str] = set()
    entries: list[dict] = []
    checkpoints: list[dict] = []
    prev_cp = audit.GENESIS_HASH
    ts = datetime(2024, 1, 8, 9, 0, tzinfo=UTC)
    participants = [(t, f"{s}-{i:04d}", s) for t in TRIALS for s in SITES for i in range(1, 71)]
    users = [f"{r[:5]}.{s.lower()}{k}" for r in ROLES for s in SITES for k in (1, 2)]
    while len(entries) < n:
        ts += timedelta(seconds=rng.randint(20, 900))
        user = rng.choice(users)
        request_id = f"{rng.getrandbits(64):016x}"
        addr = f"10.0.{rng.randint(0, 9)}.{rng.randint(2, 250)}"
        kind = rng.random()
        if kind < 0.04:  # login on the user's own system chain
            burst = [dict(chain=f"_system/user/{user}", trial=None, action="user:login", entity_type="user",
                          entity_id=user, participant=None, field=None, old_value=None, new_value=None,
                          reason=None)]
        elif kind < 0.08:  # trial-level record (settings, list generation, freeze...)
            trial = rng.choice(TRIALS)
            burst = [dict(chain=f"{trial}/trial", trial=trial, action="trial:update", entity_type="trial",
                          entity_id=trial, participant=None, field="status", old_value="open",
                          new_value="open", reason=None)]
        else:  # a form save: one entry per field, same request, microseconds apart
            trial, pid, _site = rng.choice(participants)
            update = rng.random() < 0.3
            burst = []
            for name in rng.sample(FIELDS, rng.randint(1, 12)):
                burst.append(dict(
                    chain=f"{trial}/p/{pid}", trial=trial,
                    action="form_value:update" if update else "form_value:create", entity_type="form_value",
                    entity_id=f"{rng.randint(1, 10**6)}:{name}", participant=pid, field=name,
                    old_value=str(rng.randint(0, 40)) if update else None, new_value=str(rng.randint(0, 40)),
                    reason="transcription error — corrected from source" if update else None))
        role = rng.choice(ROLES)
        for i, fields in enumerate(burst):
            fields.update(ts=ts + timedelta(microseconds=37 * i), actor_user=user, actor_role=role,
                          actor_site=rng.choice(SITES), request_id=request_id, client_addr=addr)
            row = audit.next_entry(heads.get(fields["chain"]), fields)
            row["seq"] = len(entries) + 1
            # Column order as the database returns it (seq first), as a plain dict per row.
            entries.append({k: row[k] for k in audit.ENTRY_KEYS})
            heads[row["chain"]] = audit.ChainHead(row["chain"], row["chain_seq"], row["hash"])
            moved.add(row["chain"])
        if len(entries) // 5000 > len(checkpoints):
            cp = audit.make_checkpoint(key, len(checkpoints) + 1, ts + timedelta(seconds=1),
                                       {c: (heads[c].chain_seq, heads[c].hash) for c in sorted(moved)}, prev_cp)
            checkpoints.append(cp)
            prev_cp = audit.checkpoint_hash(cp["body"])
            moved.clear()
    return entries[:n], checkpoints, key.public_key()


def time_verify(entries: list[dict], checkpoints: list[dict], public_key) -> float:
    t0 = time.perf_counter()
    verifier = Verifier(public_key)
    verifier.add_checkpoints(checkpoints)
    verifier.add_entries(entries)
    report = verifier.finish()
    elapsed = time.perf_counter() - t0
    # Checkpoints may sign heads past a truncated tail (entries[:n]); a changed entry must never show.
    if report.problem is not None and report.problem.kind != "truncated":
        raise SystemExit(f"benchmark trail does not verify: {report.problem.message}")
    return elapsed


def time_floor(blobs: list[bytes]) -> float:
    sha = hashlib.sha256
    t0 = time.perf_counter()
    for b in blobs:
        sha(b).hexdigest()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 entries, 1 run")
    parser.add_argument("--json", type=Path, help="also write the result rows as JSON here (bench/README.md)")
    args = parser.parse_args(argv)
    if args.quick:
        args.entries, args.runs = 100_000, 1

    t0 = time.perf_counter()
    entries, checkpoints, public_key = build_trail(args.entries)
    blobs = [audit.entry_bytes(e["prev_hash"], e) for e in entries]
    build = time.perf_counter() - t0
    chains = len({e["chain"] for e in entries})
    mean_bytes = sum(map(len, blobs)) / len(blobs)

    gc.collect()
    gc.disable()  # neither side allocates cycles; collector pauses would only add noise
    verify, floor = [], []
    for _ in range(args.runs):
        floor.append(time_floor(blobs))
        verify.append(time_verify(entries, checkpoints, public_key))
    gc.enable()
    v, f = statistics.median(verify), statistics.median(floor)

    print(f"python {platform.python_version()} on {platform.machine()}, {platform.processor() or '?'}; "
          f"built in {build:.1f} s")
    print(f"{len(entries):,} entries, {chains:,} chains, {len(checkpoints):,} checkpoints, "
          f"{mean_bytes:.0f} hashed bytes per entry; median of {args.runs} runs")
    print()
    print(f"{'measure':<34}{'seconds':>10}{'us/entry':>11}{'entries/s':>13}")
    for label, secs in (("verify (Verifier, full checks)", v), ("floor (sha256 of the same bytes)", f)):
        print(f"{label:<34}{secs:>10.3f}{secs / len(entries) * 1e6:>11.3f}{len(entries) / secs:>13,.0f}")
    print(f"{'ratio verify / floor':<34}{v / f:>10.2f}x   (target <= 3x)")
    if args.json:
        import json

        args.json.write_text(json.dumps([{
            "benchmark": f"audit verify ({len(entries):,} entries)", "figure": "verify time", "value": round(v, 4),
            "unit": "s", "floor": round(f, 4), "ratio": round(v / f, 3), "target": "ratio <= 3x",
            "ok": v / f <= 3}], indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
