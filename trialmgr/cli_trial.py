"""CLI groups for the trial's conduct: screening, enrollment, randomization and its list."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask.cli import AppGroup

from trialmgr.cli_support import fail, handle_errors, st
from trialmgr.services.context import cli_actor


@click.group("participant", cls=AppGroup)
def participant_group() -> None:
    """Screen, enroll and randomize participants."""


@participant_group.command("screen")
@click.option("--trial", required=True)
@click.option("--site", required=True)
@click.option("--date", "screening_date", default=None, help="Screening date (YYYY-MM-DD); default today (UTC).")
@click.option("--answers", "answers_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON file of answers by field id.")
@click.option("--answer", "pairs", multiple=True, metavar="FIELD=VALUE", help="One answer (repeatable).")
@handle_errors
def screen_cmd(trial: str, site: str, screening_date: str | None, answers_file: str | None,
               pairs: tuple[str, ...]) -> None:
    """Screen a candidate: prints eligibility with every failed criterion; the screening is logged."""
    from trialmgr.services import enrollment

    answers = json.loads(Path(answers_file).read_text()) if answers_file else {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            fail(f"--answer {pair!r}: expected FIELD=VALUE", 2)
        answers[name.strip()] = value
    with st().db.session() as s:
        res = enrollment.screen(s, cli_actor(trial=trial), trial, answers, site=site, screening_date=screening_date)
        sid, eligible = res.screening.id, res.result.eligible
        failures = [f.message for f in res.result.failures]
    click.echo(f"screening {sid}: {'ELIGIBLE' if eligible else 'NOT ELIGIBLE'}")
    for line in failures:
        click.echo(f"  - {line}")


@participant_group.command("enroll")
@click.option("--trial", required=True)
@click.option("--screening", "screening_id", required=True, type=int)
@click.option("--consent-date", required=True)
@click.option("--consent-version", required=True)
@handle_errors
def enroll_cmd(trial: str, screening_id: int, consent_date: str, consent_version: str) -> None:
    """Enroll an eligible, consented screening; prints the new participant ID."""
    from trialmgr.services import enrollment

    with st().db.session() as s:
        p = enrollment.enroll(s, cli_actor(trial=trial), trial, screening_id, consent_date=consent_date,
                              consent_version=consent_version)
        code = p.code
    click.echo(code)


@participant_group.command("randomize")
@click.option("--trial", required=True)
@click.argument("participant")
@click.option("--show-arm/--hide-arm", default=False, help="Print the arm (only for unblinded staff).")
@handle_errors
def randomize_cmd(trial: str, participant: str, show_arm: bool) -> None:
    """Randomize an enrolled participant (a repeat prints the original allocation)."""
    from trialmgr.services import randomization

    with st().db.session() as s:
        res = randomization.randomize(s, cli_actor(trial=trial), st().settings, trial, participant)
        arm, when, created = res.allocation.arm, res.allocation.randomized_at, res.created
    what = f" to {arm}" if show_arm else ""
    click.echo(f"{participant} {'randomized' if created else 'was already randomized'}{what} on {when:%Y-%m-%d}")


@click.group("randomization", cls=AppGroup)
def randomization_group() -> None:
    """The concealed allocation list: generate, import, status, design report, reveal after lock."""


@randomization_group.command("generate")
@click.option("--trial", required=True)
@handle_errors
def generate_cmd(trial: str) -> None:
    """Generate the stratified permuted-block list inside the system (sealed; its commitment is audited)."""
    from trialmgr.services import randomization

    with st().db.session() as s:
        lst = randomization.generate(s, cli_actor(trial=trial), st().settings, trial)
        click.echo(f"allocation list {lst.number} for {trial}: {lst.slots_total} sealed slots; "
                   f"commitment sha256 {lst.commitment}")


@randomization_group.command("import")
@click.option("--trial", required=True)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@handle_errors
def import_cmd(trial: str, file: str) -> None:
    """Import a statistician's list (CSV: stratum, sequence, arm, block); every problem is listed."""
    from trialmgr.domain.errors import ValidationFailed
    from trialmgr.services import randomization

    try:
        with st().db.session() as s:
            lst = randomization.import_list(s, cli_actor(trial=trial), st().settings, trial,
                                            Path(file).read_text(encoding="utf-8-sig"))
            click.echo(f"imported list {lst.number}: {lst.slots_total} slots; commitment sha256 {lst.commitment}")
    except ValidationFailed as exc:
        for name, message in exc.errors.items():
            for line in message.splitlines():
                click.echo(f"error: {name}: {line}", err=True)
        sys.exit(2)


@randomization_group.command("status")
@click.option("--trial", required=True)
@handle_errors
def status_cmd(trial: str) -> None:
    """Slots used and left per stratum (never the content)."""
    from trialmgr.services import randomization

    with st().db.session(write=False) as s:
        rows = randomization.list_status(s, trial)
        alerts = randomization.alerts(s, trial, st().settings.list_low_warning)
    if not rows:
        click.echo(f"{trial} has no allocation list")
        return
    for r in rows:
        click.echo(f"{r['stratum']:<16} used {r['used']:>5} of {r['total']:>5}, {r['left']:>5} left")
    for a in alerts:
        click.echo(f"ALERT: {a}")


@randomization_group.command("report")
@click.option("--trial", required=True)
@click.option("--sims", default=10_000, show_default=True, type=click.IntRange(1000, 1_000_000))
@handle_errors
def report_cmd(trial: str, sims: int) -> None:
    """The design's expected imbalance and predictability (simulated and exact) and the balance so far."""
    from trialmgr.services import randomization
    from trialmgr.web.reports import design_report_lines

    with st().db.session(write=False) as s:
        rep = randomization.design_report(s, trial, sims)
        bal = randomization.balance(s, trial)
    for line in design_report_lines(rep, bal):
        click.echo(line)


@randomization_group.command("reveal")
@click.option("--trial", required=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the revealed list as CSV.")
@handle_errors
def reveal_cmd(trial: str, out: str | None) -> None:
    """After lock: decrypt the list, prove it matches the commitment and that every assignment followed it."""
    from trialmgr.domain.vocab import Role
    from trialmgr.services import randomization

    with st().db.session() as s:
        report = randomization.reveal(s, cli_actor(role=Role.INVESTIGATOR, trial=trial), st().settings, trial)
    for lst in report["lists"]:
        click.echo(f"list {lst['number']} ({lst['source']}): {lst['slots']} slots")
        matches = "matches the decrypted list" if lst["commitment_matches"] else "DOES NOT MATCH"
        audited = "recorded in the audit trail" if lst["commitment_in_audit_trail"] else "NOT in the audit trail"
        click.echo(f"  commitment {lst['commitment']}: {matches}, {audited}")
        click.echo(f"  salt {lst['salt']}")
        if lst["reproduced_from_seed"] is not None:
            same = "identical" if lst["reproduced_from_seed"] else "DIFFERENT"
            click.echo(f"  regenerated from its sealed seed: {same}")
        click.echo(f"  {lst['assignments']} assignments checked: "
                   + ("all followed the list in order" if not lst["assignment_problems"] else "PROBLEMS"))
        for p in lst["assignment_problems"]:
            click.echo(f"    - {p}")
        if out:
            with open(out, "w", encoding="utf-8") as fh:
                fh.write("list,stratum,sequence,block,block_size,arm\n")
                for row in lst["rows"]:
                    fh.write(f"{lst['number']}," + ",".join(str(x) for x in row) + "\n")
    sys.exit(0 if report["ok"] else 1)


GROUPS = [participant_group, randomization_group]
