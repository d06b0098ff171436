"""The `trialmgr` command: a click group over the same services as the web pages and the API."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from pathlib import Path

import click
from flask.cli import FlaskGroup

from trialmgr import cli_commands, cli_data, cli_keys, cli_trial
from trialmgr.cli_support import fail, handle_errors, st
from trialmgr.config import ensure_secret_key
from trialmgr.domain.errors import DomainError
from trialmgr.domain.vocab import Role
from trialmgr.services.context import cli_actor

REPO_ROOT = Path(__file__).resolve().parent.parent


def _make_app():
    from trialmgr import create_app

    return create_app(cli=True)


@click.group(cls=FlaskGroup, create_app=_make_app, add_default_commands=False, add_version_option=False,
             load_dotenv=False, set_debug_flag=False)
def main() -> None:
    """trialmgr: randomized-trial management and concealed randomization."""


# -- instance ------------------------------------------------------------------------------------------


def _init_instance() -> None:
    from trialmgr import keys
    from trialmgr.db import migrate
    from trialmgr.services import twofactor

    settings = ensure_secret_key(st().settings)
    keys.ensure_all(settings)
    db = st().db
    if db.is_sqlite:
        Path(db.engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    db.check()
    migrate.upgrade(db.engine)
    with db.session() as s:  # TOTP secrets stored in the clear by versions before sealing
        sealed = twofactor.seal_legacy_secrets(s, keys.credentials_key(settings))
    if sealed:
        click.echo(f"sealed the two-factor secrets of {sealed} account(s) with {keys.CREDENTIALS_KEY_FILE}")


@main.command("init")
@handle_errors
def init_cmd() -> None:
    """Create or upgrade the database schema (to head) and create the instance keys it needs."""
    _init_instance()
    click.echo(f"instance: {st().settings.instance_path}")
    click.echo(f"database: {st().db.safe_url()} (schema at head)")


DEMO_USERS = [
    ("admin", "Ada Admin", Role.ADMIN, None),
    ("investigator", "Irene Investigator", Role.INVESTIGATOR, None),
    ("coordinator", "Carlos Coordinator", Role.COORDINATOR, "DE"),
    ("assessor", "Asha Assessor", Role.ASSESSOR, "DE"),
    ("monitor", "Mona Monitor", Role.MONITOR, None),
]


@main.command("demo")
@click.option("--participants", default=40, show_default=True, help="Synthetic participants to create.")
@handle_errors
def demo_cmd(participants: int) -> None:
    """Initialise an instance with the default trial and one demo user per role (passwords printed)."""
    from trialmgr.protocols import default_protocol_path
    from trialmgr.services import accounts, trials

    _init_instance()
    actor = cli_actor()
    with st().db.session() as s:
        version, _ = trials.load_protocol(s, actor, default_protocol_path())
        trial_id = version.trial_id
        lines = []
        for username, name, role, site in DEMO_USERS:
            password = "-".join(secrets.token_hex(3) for _ in range(4))
            try:
                user = accounts.get_user(s, username)
                accounts.set_password(s, actor, st().hasher, user, password)
            except DomainError:
                user = accounts.create_user(s, actor, st().hasher, username=username, full_name=name,
                                            password=password)
            if not any(m.trial == trial_id and m.role == role for m in accounts.memberships(user)):
                accounts.grant_role(s, actor, user, trial_id, role, site)
                s.refresh(user)
            lines.append((username, password, role.value + (f" at site {site}" if site else "")))
    if participants:
        from trialmgr.demo import populate
        from trialmgr.services.randomization import active_list

        with st().db.session(write=False) as s:
            already = active_list(s, trial_id) is not None
        if already:
            click.echo("The demo trial already has data; no more synthetic participants were added.")
        else:
            counts = populate(st().db, st().settings, trial_id, participants)
            from trialmgr import keys
            from trialmgr.services import audit

            with st().db.session() as s:
                audit.create_checkpoint(s, keys.audit_private_key(st().settings), "demo")
            click.echo(f"Synthetic participants: {counts['screened']} screened, {counts['ineligible']} not eligible, "
                       f"{counts['declined']} declined, {counts['randomized']} randomized, {counts['forms']} forms, "
                       f"{counts['queries']} queries.")
    click.echo(f"Demo trial {trial_id!r} is ready. Demo accounts (passwords change each time you run demo):")
    for username, password, what in lines:
        click.echo(f"  {username:<13} {password}   {what}")


@main.command("serve")
@click.option("--dev", is_flag=True, help="Flask's development server with the reloader instead of gunicorn.")
@click.option("--bind", default="127.0.0.1:8000", show_default=True)
def serve_cmd(dev: bool, bind: str) -> None:
    """Serve trialmgr with gunicorn and deploy/gunicorn.conf.py."""
    settings = st().settings
    if not settings.secret_key and not os.environ.get("TRIALMGR_SECRET_KEY"):
        fail(f"no secret key in {settings.instance_path}: run `trialmgr init` (or `trialmgr demo`) first")
    env = dict(os.environ, TRIALMGR_INSTANCE=str(settings.instance_path))
    if dev:
        host, _, port = bind.rpartition(":")
        from trialmgr import create_app

        create_app().run(host=host or "127.0.0.1", port=int(port), debug=True, use_reloader=True)
        return
    gunicorn = shutil.which("gunicorn") or str(Path(sys.executable).with_name("gunicorn"))
    conf = REPO_ROOT / "deploy" / "gunicorn.conf.py"
    args = [gunicorn, "-c", str(conf), "--bind", bind, "trialmgr.wsgi:app"]
    click.echo(f"serving on http://{bind}/ (Ctrl-C to stop)")
    os.execve(gunicorn, args, env)  # noqa: S606  (replace this process with gunicorn)


for _group in cli_commands.GROUPS + cli_trial.GROUPS + cli_data.GROUPS + cli_keys.GROUPS:
    main.add_command(_group)


if __name__ == "__main__":
    main()
