"""`trialmgr keys ...`: rotate the audit signing key and the allocation key (docs/keys.md)."""

from __future__ import annotations

import datetime as dt

import click
from flask.cli import AppGroup

from trialmgr.cli_support import fail, handle_errors, st
from trialmgr.services.context import cli_actor


@click.group("keys", cls=AppGroup)
def keys_group() -> None:
    """Rotate the instance's keys (see docs/keys.md)."""


@keys_group.command("rotate-audit")
@handle_errors
def rotate_audit() -> None:
    """New Ed25519 audit signing key; earlier public keys stay in instance/audit_public_keys."""
    from trialmgr import keys
    from trialmgr.domain import audit as chainlib
    from trialmgr.services import audit, keyrotation

    settings = st().settings
    old_key = keys.audit_private_key(settings)
    old_id = chainlib.key_id(old_key.public_key())
    with st().db.session() as s:
        # Everything written so far is signed by the old key before it retires.
        audit.create_checkpoint(s, old_key, "before audit key rotation")
    new_id = keys.rotate_audit_key(settings)
    with st().db.session() as s:
        keyrotation.record_audit_key_rotation(s, cli_actor(), old_id, new_id)
        audit.create_checkpoint(s, keys.audit_private_key(settings), "after audit key rotation")
    click.echo(f"audit signing key rotated: {old_id} -> {new_id}")
    click.echo("publish the new public key (trialmgr audit public-key); the old one stays on file in "
               f"{settings.instance_path / keys.AUDIT_PUBLIC_DIR} so older checkpoints still verify")


@keys_group.command("rotate-allocation")
@handle_errors
def rotate_allocation() -> None:
    """Re-encrypt every sealed slot and list secret under a new allocation key, in one transaction."""
    from trialmgr import keys
    from trialmgr.domain.concealment import ConcealmentError
    from trialmgr.services import keyrotation

    settings = st().settings
    old_key = keys.allocation_key(settings)
    try:
        new_key = keys.stage_allocation_key(settings)
    except keys.RotationPending as exc:
        fail(str(exc))
    try:
        with st().db.session() as s:
            done = keyrotation.reencrypt_allocation(s, cli_actor(), old_key, new_key)
    except ConcealmentError as exc:
        keys.discard_staged_allocation_key(settings)
        fail(f"nothing was changed: a sealed value does not decrypt with the current key ({exc})")
    except BaseException:
        keys.discard_staged_allocation_key(settings)
        raise
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    retired = keys.commit_allocation_key(settings, stamp)
    click.echo(f"allocation key rotated ({keys.allocation_key_id(old_key)} -> {keys.allocation_key_id(new_key)}): "
               f"{done.slots} slots in {done.lists} lists re-encrypted")
    click.echo(f"the old key is kept as {retired}; delete it once the new key is in your key backups")


GROUPS = [keys_group]
