#!/usr/bin/env python3
"""The two commands a newcomer needs, with nothing but Python 3.11+:

    python3 dev.py run     # virtual environment, install, demo trial and accounts, serve on 127.0.0.1:8000
    python3 dev.py test    # virtual environment, install with the test extra, the whole suite

Extra arguments after `test` go to pytest. Set TRIALMGR_TEST_DATABASE_URL to run the suite on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".trialmgr-installed"


def _run(*cmd: str | Path, **kw) -> None:
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT, **kw)
    if result.returncode:
        sys.exit(result.returncode)


def ensure_env(extra: str = "test") -> None:
    if sys.version_info < (3, 11):  # noqa: UP036  (dev.py may be started by an older python3)
        sys.exit(f"trialmgr needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extra.encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    print("installing trialmgr and its dependencies", flush=True)
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", f".[{extra}]")
    STAMP.write_text(wanted)


def ensure_browser() -> None:
    """The browser tests drive Debian's Chromium; install it when we can (root with apt), never download one."""
    import shutil

    if shutil.which("chromium"):
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing Debian's chromium for the browser tests", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env)
    if not shutil.which("chromium"):
        print("warning: chromium is not installed (as root: apt-get install -y chromium); the browser tests "
              "in tests/e2e will fail", file=sys.stderr)


def main(argv: list[str]) -> None:
    command = argv[0] if argv else "help"
    if command == "run":
        ensure_env()
        _run(BIN / "trialmgr", "demo")
        os.execv(str(BIN / "trialmgr"), [str(BIN / "trialmgr"), "serve", *argv[1:]])
    elif command == "test":
        ensure_env()
        ensure_browser()
        _run(BIN / "python", "-m", "pytest", *argv[1:])
    elif command == "install":
        ensure_env()
    else:
        print(__doc__)
        sys.exit(0 if command in ("help", "-h", "--help") else 2)


if __name__ == "__main__":
    main(sys.argv[1:])
