"""CLI groups for the end of a trial: data states with electronic signatures, export and its verification."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import AppGroup, with_appcontext

from trialmgr.cli_support import fail, handle_errors, st


def _signer(trial: str, username: str, password_stdin: bool):
    """The investigator signing: the console operator names the user and gives that user's password."""
    from trialmgr.domain.vocab import Role
    from trialmgr.services import accounts
    from trialmgr.services.context import Actor

    with st().db.session(write=False) as s:
        user = accounts.get_user(s, username)
        held = [m for m in accounts.memberships(user) if m.trial == trial and m.role is Role.INVESTIGATOR]
        if not held:
            fail(f"{username} is not an investigator in {trial}", 2)
        actor = Actor(username=user.username, role=Role.INVESTIGATOR, trial=trial, user_id=user.id,
                      full_name=user.full_name, client_addr="console")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(f"Password of {username} (electronic signature)", hide_input=True)
    return actor, password


def _state_command(action: str, needs_reason: bool):
    @click.option("--trial", required=True)
    @click.option("--user", "username", required=True, help="The investigator who signs.")
    @click.option("--reason", default=None, required=needs_reason)
    @click.option("--password-stdin", is_flag=True)
    @handle_errors
    def command(trial: str, username: str, reason: str | None, password_stdin: bool) -> None:
        from trialmgr.services import locking, signatures

        actor, password = _signer(trial, username, password_stdin)
        with st().db.session() as s:
            row, sig = locking.change_state(s, actor, st().hasher, st().settings, trial, action, password=password,
                                            reason=reason)
            click.echo(f"{trial}: data {row.data_state.value}. {signatures.describe(sig)}")

    command.__doc__ = f"{action.capitalize()} the trial's data, signed by an investigator (password asked)."
    return command


@click.group("data", cls=AppGroup)
def data_group() -> None:
    """Freeze, lock and unlock a trial's data (signed)."""


for _action, _reason in (("freeze", False), ("unfreeze", True), ("lock", False), ("unlock", True)):
    data_group.command(_action)(_state_command(_action, _reason))


def _participant_lock_command(locked: bool):
    @click.option("--trial", required=True)
    @click.option("--participant", "code", required=True)
    @click.option("--user", "username", required=True, help="The investigator who signs.")
    @click.option("--reason", default=None, required=not locked)
    @click.option("--password-stdin", is_flag=True)
    @handle_errors
    def command(trial: str, code: str, username: str, reason: str | None, password_stdin: bool) -> None:
        from trialmgr.services import enrollment, locking, signatures

        actor, password = _signer(trial, username, password_stdin)
        with st().db.session() as s:
            participant = enrollment.get_participant(s, actor, trial, code, lock=True)
            sig = locking.set_participant_lock(s, actor, st().hasher, participant, locked, password=password,
                                               reason=reason)
            click.echo(f"{code}: {'locked' if locked else 'unlocked'}. {signatures.describe(sig)}")

    command.__doc__ = (f"{'Lock' if locked else 'Unlock'} one participant's data, signed by an investigator"
                       + ("." if locked else " (reason required)."))
    return command


data_group.command("lock-participant")(_participant_lock_command(True))
data_group.command("unlock-participant")(_participant_lock_command(False))


@click.group("export", cls=AppGroup, invoke_without_command=True)
@click.option("--trial", default=None)
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None)
@click.option("--blinded", is_flag=True, help="Arms as neutral letters; no allocation detail anywhere.")
@click.option("--deidentified", is_flag=True, help="Drop direct identifiers; shift dates per participant.")
@click.pass_context
@with_appcontext
def export_group(ctx: click.Context, trial: str | None, out: str | None, blinded: bool, deidentified: bool) -> None:
    """Export a trial as a signed bundle: trialmgr export --trial T --out FILE.zip [--blinded] [--deidentified]."""
    if ctx.invoked_subcommand is not None:
        return
    if not trial or not out:
        fail("export needs --trial and --out (or the subcommand: export verify FILE.zip)", 2)
    _export(trial, Path(out), blinded, deidentified)


@handle_errors
def _export(trial: str, out: Path, blinded: bool, deidentified: bool) -> None:
    from trialmgr.domain.vocab import Role
    from trialmgr.export import bundle
    from trialmgr.services.context import cli_actor

    with click.progressbar(length=100, label="exporting", file=sys.stderr) as bar:
        state = {"pct": 0}

        def progress(stage: str, done: int, total: int) -> None:
            pct = int(100 * done / max(total, 1))
            bar.update(pct - state["pct"])
            state["pct"] = pct

        with st().db.session() as s:
            manifest = bundle.build(s, cli_actor(role=Role.INVESTIGATOR, trial=trial), st().settings, trial, out,
                                    blinded=blinded, deidentified=deidentified, progress=progress)
    kind = manifest["kind"]
    click.echo(f"{out}: {kind} bundle of {trial}, {len(manifest['files'])} files, "
               f"{manifest['counts'].get('participants', 0)} participants"
               + (" -- INTERIM: the data are not locked" if kind == "interim" else ""))


@export_group.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--public-key", "public_key", type=click.Path(exists=True, dir_okay=False), default=None)
def export_verify(file: str, public_key: str | None) -> None:
    """Check a bundle's signature, every file's hash and its audit trail, with no database."""
    from trialmgr.domain.bundle import verify_bundle

    report = verify_bundle(file, Path(public_key).read_bytes() if public_key else None)
    if report.ok:
        click.echo(f"ok: {report.kind} bundle, {report.files} files match the signed manifest; audit trail of "
                   f"{report.entries} entries ({report.redacted} withheld for blinding or de-identification) and "
                   f"{report.checkpoints} checkpoints verified with {report.key_source}")
        return
    for line in report.problems:
        click.echo(f"FAILED: {line}", err=True)
    sys.exit(1)


GROUPS = [data_group, export_group]
