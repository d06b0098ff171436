"""CLI groups: users, tokens, protocols. Each command parses, calls a service, commits, prints."""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup, with_appcontext

from trialmgr.cli_support import fail, handle_errors, st
from trialmgr.services.context import cli_actor


def _read_password(from_stdin: bool, username: str) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            fail("--password-stdin given but standard input is empty", 2)
        return line.rstrip("\r\n")
    return click.prompt(f"Password for {username}", hide_input=True, confirmation_prompt=True)


def _parse_role(spec: str) -> tuple[str, str, str | None]:
    """trial:role[@site] -> (trial, role, site)."""
    trial, sep, rest = spec.partition(":")
    if not sep or not trial or not rest:
        fail(f"--role {spec!r}: expected TRIAL:ROLE or TRIAL:ROLE@SITE", 2)
    role, _, site = rest.partition("@")
    return trial, role, site or None


@click.group("user", cls=AppGroup)
def user_group() -> None:
    """Manage user accounts and their roles."""


@user_group.command("add")
@click.argument("username")
@click.option("--name", "full_name", required=True, help="Printed name, shown with electronic signatures.")
@click.option("--email", default=None)
@click.option("--role", "roles", multiple=True, metavar="TRIAL:ROLE[@SITE]", help="Grant a role (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@handle_errors
def user_add(username: str, full_name: str, email: str | None, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create a user (password from a prompt or --password-stdin)."""
    from trialmgr.services import accounts

    parsed = [_parse_role(r) for r in roles]
    password = _read_password(password_stdin, username)
    actor = cli_actor()
    with st().db.session() as s:
        user = accounts.create_user(s, actor, st().hasher, username=username, full_name=full_name,
                                    password=password, email=email)
        for trial, role, site in parsed:
            accounts.grant_role(s, actor, user, trial, role, site)
    click.echo(f"created user {username}" + (f" with roles {', '.join(roles)}" if roles else ""))


@user_group.command("grant")
@click.argument("username")
@click.argument("role_spec", metavar="TRIAL:ROLE[@SITE]")
@handle_errors
def user_grant(username: str, role_spec: str) -> None:
    """Grant a role in a trial (coordinators and assessors need a site)."""
    from trialmgr.services import accounts

    trial, role, site = _parse_role(role_spec)
    with st().db.session() as s:
        accounts.grant_role(s, cli_actor(), accounts.get_user(s, username), trial, role, site)
    click.echo(f"granted {role_spec} to {username}")


@user_group.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True)
@handle_errors
def user_passwd(username: str, password_stdin: bool) -> None:
    """Set a new password (an administrator's reset) and clear any lockout."""
    from trialmgr.services import accounts

    password = _read_password(password_stdin, username)
    with st().db.session() as s:
        accounts.set_password(s, cli_actor(), st().hasher, accounts.get_user(s, username), password)
    click.echo(f"password changed for {username}")


@user_group.command("deactivate")
@click.argument("username")
@click.option("--reason", required=True)
@handle_errors
def user_deactivate(username: str, reason: str) -> None:
    """Deactivate an account (accounts are never deleted)."""
    from trialmgr.services import accounts

    with st().db.session() as s:
        accounts.set_active(s, cli_actor(), accounts.get_user(s, username), False, reason)
    click.echo(f"deactivated {username}")


@user_group.command("list")
@handle_errors
def user_list() -> None:
    """List users with their roles."""
    from sqlalchemy import select

    from trialmgr.db.models_accounts import User
    from trialmgr.services import accounts

    with st().db.session(write=False) as s:
        for user in s.scalars(select(User).order_by(User.username)):
            roles = ", ".join(f"{m.trial}:{m.role.value}" + (f"@{'/'.join(m.sites)}" if m.sites else "")
                              for m in accounts.memberships(user))
            click.echo(f"{user.username:<16} {'active' if user.active else 'inactive':<9} {user.full_name:<28} {roles}")


@click.group("token", cls=AppGroup)
def token_group() -> None:
    """API bearer tokens (shown once, stored hashed)."""


@token_group.command("create")
@click.option("--user", "username", required=True)
@click.option("--trial", required=True)
@click.option("--role", required=True)
@click.option("--name", required=True, help="What the token is for.")
@click.option("--days", default=90, show_default=True, type=int)
@handle_errors
def token_create(username: str, trial: str, role: str, name: str, days: int) -> None:
    """Create a token scoped to one trial and role; it is printed once and never again."""
    from trialmgr.services import accounts

    with st().db.session() as s:
        user = accounts.get_user(s, username)
        token, plaintext = accounts.create_token(s, cli_actor(), user, trial_id=trial, role=role, name=name,
                                                 days=days)
        expires = token.expires_at
    click.echo(plaintext)
    click.echo(f"(token for {username} as {role} in {trial}, expires {expires:%Y-%m-%d}; store it now, "
               "it cannot be shown again)", err=True)


@token_group.command("revoke")
@click.argument("prefix")
@click.option("--reason", default=None)
@handle_errors
def token_revoke(prefix: str, reason: str | None) -> None:
    """Revoke the token whose printed prefix is PREFIX."""
    from sqlalchemy import select

    from trialmgr.db.models_accounts import ApiToken
    from trialmgr.services import accounts

    with st().db.session() as s:
        matches = s.scalars(select(ApiToken).where(ApiToken.prefix == prefix[:10])).all()
        if len(matches) != 1:
            fail(f"no single token has the prefix {prefix!r}", 2)
        accounts.revoke_token(s, cli_actor(), matches[0], reason)
    click.echo(f"revoked {prefix[:10]}…")


@click.group("protocol", cls=AppGroup)
def protocol_group() -> None:
    """Check and load protocol files."""


@protocol_group.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def protocol_check(files: tuple[str, ...]) -> None:
    """Validate protocol files and list every mistake with its key path (exit 2 if any)."""
    from trialmgr.domain.errors import ProtocolInvalid
    from trialmgr.protocols import load_protocol_file

    bad = False
    for path in files:
        try:
            proto = load_protocol_file(path)
        except ProtocolInvalid as exc:
            bad = True
            click.echo(f"{path}: {len(exc.errors)} problem(s)", err=True)
            for line in exc.errors:
                click.echo(f"  {line}", err=True)
        else:
            click.echo(f"{path}: ok ({proto.id} version {proto.version}, {len(proto.forms)} forms, "
                       f"{len(proto.visits)} visits, {len(proto.strata_keys())} strata)")
    sys.exit(2 if bad else 0)


@protocol_group.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@handle_errors
def protocol_load(file: str) -> None:
    """Register a trial's protocol; a changed file becomes a new version (an amendment)."""
    from trialmgr.services import trials

    with st().db.session() as s:
        version, created = trials.load_protocol(s, cli_actor(), file)
        msg = (f"loaded {version.trial_id} protocol version {version.label} as amendment {version.number}"
               if created else f"{version.trial_id}: this file is already loaded as amendment {version.number}")
        click.echo(f"{msg} (sha256 {version.sha256})")


GROUPS = [user_group, token_group, protocol_group]


@click.group("audit", cls=AppGroup)
def audit_group() -> None:
    """The tamper-evident audit trail: verify it, sign checkpoints, print the public key."""


@audit_group.command("public-key")
@handle_errors
def audit_public_key() -> None:
    """Print the PEM public key monitors use to verify checkpoints and export bundles."""
    from trialmgr import keys
    from trialmgr.domain import audit

    click.echo(audit.public_key_pem(keys.audit_private_key(st().settings)).decode().rstrip())


@audit_group.command("checkpoint")
@click.option("--reason", default="manual", show_default=True)
@handle_errors
def audit_checkpoint(reason: str) -> None:
    """Sign a checkpoint over the chain heads that moved since the last one."""
    from trialmgr import keys
    from trialmgr.services import audit

    with st().db.session() as s:
        cp = audit.create_checkpoint(s, keys.audit_private_key(st().settings), reason)
        number = cp.seq if cp else None
    click.echo(f"checkpoint {number} signed" if number else "nothing changed since the last checkpoint")


@audit_group.command("verify")
@click.option("--trial", default=None, help="Only this trial's chains (default: everything).")
@click.option("--public-key", "public_key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Verify with this PEM public key instead of the instance's keys.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Processes checking the entries in parallel (default: one per CPU).")
@handle_errors
def audit_verify(trial: str | None, public_key: str | None, workers: int | None) -> None:
    """Exit 0 with the counts verified, or 1 naming the first bad entry and what is wrong with it."""
    from pathlib import Path

    from trialmgr import keys
    from trialmgr.domain import audit as chainlib
    from trialmgr.services import audit_query, integrity

    if public_key:
        pub = chainlib.load_public_key_pem(Path(public_key).read_bytes())
        public_keys = {chainlib.key_id(pub): pub}
    else:
        public_keys = keys.audit_public_keys(st().settings)
    report = audit_query.verify_parallel(st().db, public_keys, trial, workers=workers)
    with st().db.session(write=False) as s:
        mismatches = integrity.check_data(s, trial) if report.ok else []
    if not report.ok:
        click.echo(f"FAILED: {report.problem.message}", err=True)
        click.echo(f"(checked {report.entries} entries and {report.checkpoints} checkpoints before stopping)",
                   err=True)
        sys.exit(1)
    if mismatches:
        for line in mismatches[:20]:
            click.echo(f"FAILED: {line}", err=True)
        sys.exit(1)
    click.echo(f"ok: {report.entries} entries in {report.chains} chains and {report.checkpoints} signed "
               f"checkpoints verified" + (f" for trial {trial}" if trial else ""))


GROUPS.append(audit_group)


@click.command("backup")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The backup file to write.")
@with_appcontext
@handle_errors
def backup_cmd(out: str) -> None:
    """Back up a SQLite database with SQLite's online backup (consistent while the app runs).

    PostgreSQL: use pg_dump (see the README). Back up the instance folder's keys separately.
    """
    import sqlite3

    db = st().db
    if not db.is_sqlite:
        fail("this instance uses PostgreSQL: back it up with pg_dump -Fc (see the README)", 2)
    source = sqlite3.connect(db.engine.url.database)
    target = sqlite3.connect(out)
    try:
        with target:
            source.backup(target)
        ok = target.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        target.close()
        source.close()
    if ok != "ok":
        fail(f"the backup failed its integrity check: {ok}")
    click.echo(f"backed up {db.engine.url.database} to {out} (integrity ok)")


GROUPS.append(backup_cmd)
