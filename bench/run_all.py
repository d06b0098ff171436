"""Run every bench/bench_*.py in turn and print one combined table (see bench/README.md).

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--skip NAME ...] [--json PATH]
                                      [--timeout SECONDS] [-- EXTRA ARGS FOR EVERY SCRIPT]

Each script's own output is shown as it runs. A script that accepts --json (its source mentions it) writes
its rows to a temporary file that is merged into the table; one that does not is still run, and shows up as
a single row with its exit status. --quick is passed only to scripts that accept it. Exit status 1 if a
script failed or a row missed its target.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
KEYS = ("benchmark", "figure", "value", "unit", "floor", "ratio", "target", "ok")


def discover(only: list[str], skip: list[str]) -> list[Path]:
    scripts = sorted(BENCH.glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if any(o in s.stem for o in only)]
    return [s for s in scripts if not any(k in s.stem for k in skip)]


def supports(script: Path, flag: str) -> bool:
    return f'"{flag}"' in script.read_text(encoding="utf-8")


def run_one(script: Path, args: argparse.Namespace, extra: list[str], tmp: Path) -> tuple[int, float, list[dict]]:
    cmd = [sys.executable, str(script)]
    if args.quick and supports(script, "--quick"):
        cmd.append("--quick")
    out = tmp / f"{script.stem}.json"
    if supports(script, "--json"):
        cmd += ["--json", str(out)]
    cmd += extra
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    print(f"\n=== {script.name}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    try:
        code = subprocess.run(cmd, cwd=REPO, env=env, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:  # subprocess.run kills the child on timeout
        print(f"=== {script.name}: timed out after {args.timeout:.0f} s", flush=True)
        code = -1
    elapsed = time.perf_counter() - start
    rows: list[dict] = []
    if out.exists():
        try:
            data = json.loads(out.read_text(encoding="utf-8"))
            rows = [{k: r.get(k) for k in KEYS} for r in data if isinstance(r, dict)]
        except (json.JSONDecodeError, TypeError) as exc:
            print(f"=== {script.name}: unreadable --json output: {exc}", flush=True)
    return code, elapsed, rows


def fmt(x: object, spec: str = ".2f") -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "ok" if x else "MISSED"
    if isinstance(x, int | float):
        return format(x, spec)
    return str(x)


def print_table(results: list[tuple[Path, int, float, list[dict]]]) -> None:
    lines = [("benchmark", "figure", "value", "unit", "floor", "ratio", "target", "")]
    for script, code, elapsed, rows in results:
        if not rows:
            status = "exit 0" if code == 0 else f"FAILED (exit {code})"
            lines.append((script.stem, "(no --json rows; see output above)", f"{elapsed:.1f}", "s wall", "-", "-",
                          "-", status))
        for r in rows:
            verdict = "" if r["ok"] is None else fmt(r["ok"])
            if code != 0:
                verdict = f"{verdict} (exit {code})".strip()
            lines.append((fmt(r["benchmark"]), fmt(r["figure"]), fmt(r["value"]), fmt(r["unit"]), fmt(r["floor"]),
                          fmt(r["ratio"], ".3g"), fmt(r["target"]), verdict))
    widths = [min(60, max(len(line[i]) for line in lines)) for i in range(len(lines[0]))]
    right = {2, 4, 5}
    print()
    for n, line in enumerate(lines):
        cells = [c[:widths[i]].rjust(widths[i]) if i in right else c[:widths[i]].ljust(widths[i])
                 for i, c in enumerate(line)]
        print("  ".join(cells).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="pass --quick to every script that accepts it")
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="run scripts whose name contains NAME")
    ap.add_argument("--skip", action="append", default=[], metavar="NAME", help="skip scripts whose name contains NAME")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per script before it is killed")
    ap.add_argument("--json", type=Path, help="write all rows (with the script name) as one JSON list here")
    args = ap.parse_args(argv)

    scripts = discover(args.only, args.skip)
    if not scripts:
        ap.error("no bench/bench_*.py script matches")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-run-all-") as tmp:
        for script in scripts:
            code, elapsed, rows = run_one(script, args, extra, Path(tmp))
            results.append((script, code, elapsed, rows))
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps([dict(r, script=s.name) for s, _, _, rows in results for r in rows],
                                        indent=1), encoding="utf-8")
    failed = any(code != 0 for _, code, _, _ in results) or any(
        r["ok"] is False for _, _, _, rows in results for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
