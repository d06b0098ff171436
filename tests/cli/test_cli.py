from __future__ import annotations

import subprocess
import sys

from sqlalchemy import func, select

from tests.support import DEFAULT_PROTOCOL, MASH_PROTOCOL, PASSWORD
from trialmgr.db.models_accounts import ProtocolVersion, User


def test_protocol_check_ok_for_both_shipped_files(runner):
    result = runner.invoke(args=["protocol", "check", str(DEFAULT_PROTOCOL), str(MASH_PROTOCOL)])
    assert result.exit_code == 0, result.output
    assert "hip-pt-clbp" in result.output and "mash" in result.output


def test_protocol_check_lists_every_mistake_and_exits_2(runner, tmp_path):
    text = DEFAULT_PROTOCOL.read_text()
    text = text.replace("block_sizes = [2, 4, 6]", "block_sizes = [2, 3, 6]", 1)
    text += "\nbogus_key = 1\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = runner.invoke(args=["protocol", "check", str(bad)])
    assert result.exit_code == 2
    assert "randomization.block_sizes" in result.output and "bogus_key" in result.output
    assert "Traceback" not in result.output


def test_protocol_load_and_amendment(runner, db, tmp_path):
    first = runner.invoke(args=["protocol", "load", str(DEFAULT_PROTOCOL)])
    assert first.exit_code == 0 and "amendment 1" in first.output, first.output
    again = runner.invoke(args=["protocol", "load", str(DEFAULT_PROTOCOL)])
    assert "already loaded" in again.output
    amended = tmp_path / "hip-pt-clbp-v2.toml"
    amended.write_text(DEFAULT_PROTOCOL.read_text().replace("target_enrollment = 184", "target_enrollment = 200"))
    result = runner.invoke(args=["protocol", "load", str(amended)])
    assert result.exit_code == 0 and "amendment 2" in result.output, result.output
    with db.session(write=False) as s:
        versions = s.scalars(select(ProtocolVersion).order_by(ProtocolVersion.number)).all()
    assert [v.number for v in versions] == [1, 2]
    assert versions[0].source_text == DEFAULT_PROTOCOL.read_text()  # the old version is never rewritten


def test_user_add_with_password_stdin_and_roles(runner, db, trial):
    result = runner.invoke(args=["user", "add", "paula", "--name", "Paula Pérez", "--role",
                                 "hip-pt-clbp:coordinator@PA", "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    with db.session(write=False) as s:
        assert s.scalar(select(User).where(User.username == "paula")).full_name == "Paula Pérez"


def test_user_add_bad_input_writes_nothing(runner, db, trial):
    cases = [
        (["user", "add", "weak", "--name", "W", "--password-stdin"], "short\n", "password"),
        (["user", "add", "role", "--name", "R", "--role", "hip-pt-clbp:wizard", "--password-stdin"],
         PASSWORD + "\n", "unknown role"),
        (["user", "add", "site", "--name", "S", "--role", "hip-pt-clbp:coordinator@XX", "--password-stdin"],
         PASSWORD + "\n", "unknown site"),
    ]
    for args, stdin, message in cases:
        result = runner.invoke(args=args, input=stdin)
        assert result.exit_code == 2, result.output
        assert message in result.output
    with db.session(write=False) as s:
        assert s.scalar(select(func.count()).select_from(User)) == 0


def test_unreachable_database_is_one_clear_line(tmp_path):
    env = {"TRIALMGR_INSTANCE": str(tmp_path), "PATH": "/usr/bin:/bin",
           "TRIALMGR_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    proc = subprocess.run([sys.executable, "-m", "trialmgr.cli", "init"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 1
    assert "cannot reach the database" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_init_and_demo_in_a_fresh_instance(tmp_path):
    env = {"TRIALMGR_INSTANCE": str(tmp_path / "inst"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "trialmgr.cli", "demo", "--participants", "0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in ("admin", "investigator", "coordinator", "assessor", "monitor"):
        assert name in proc.stdout
    assert (tmp_path / "inst" / "secret_key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "inst" / "audit_signing_key.pem").stat().st_mode & 0o077 == 0
    assert (tmp_path / "inst" / "credentials.key").stat().st_mode & 0o077 == 0
    again = subprocess.run([sys.executable, "-m", "trialmgr.cli", "init"], capture_output=True, text=True,
                           env=env, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "sealed" not in again.stdout


def test_init_seals_two_factor_secrets_stored_in_the_clear(tmp_path):
    """An instance upgraded from a version that stored TOTP secrets in the clear: `trialmgr init` seals them."""
    import sqlite3

    from trialmgr.services import twofactor

    env = {"TRIALMGR_INSTANCE": str(tmp_path / "inst"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "trialmgr.cli", "demo", "--participants", "0"], capture_output=True,
                   env=env, timeout=120, check=True)
    secret = twofactor.new_secret()
    con = sqlite3.connect(tmp_path / "inst" / "trialmgr.db")
    try:
        with con:
            con.execute("UPDATE user_account SET totp_secret = ? WHERE username = 'monitor'", (secret,))
    finally:
        con.close()
    proc = subprocess.run([sys.executable, "-m", "trialmgr.cli", "init"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "sealed the two-factor secrets of 1 account(s)" in proc.stdout and secret not in proc.stdout
    con = sqlite3.connect(tmp_path / "inst" / "trialmgr.db")
    try:
        user_id, stored = con.execute(
            "SELECT id, totp_secret FROM user_account WHERE username = 'monitor'").fetchone()
    finally:
        con.close()
    key = (tmp_path / "inst" / "credentials.key").read_bytes()
    assert stored.startswith("v1.") and twofactor.unseal(key, user_id, stored) == secret


def test_backup_of_a_running_sqlite_instance(tmp_path):
    import sqlite3

    env = {"TRIALMGR_INSTANCE": str(tmp_path / "inst"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "trialmgr.cli", "demo", "--participants", "3"], capture_output=True,
                   env=env, timeout=120, check=True)
    out = tmp_path / "backup.db"
    proc = subprocess.run([sys.executable, "-m", "trialmgr.cli", "backup", "--out", str(out)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    con = sqlite3.connect(out)
    try:
        assert con.execute("SELECT count(*) FROM audit_entry").fetchone()[0] > 10
    finally:
        con.close()
