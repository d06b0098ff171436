"""Trials and their protocol versions: loading a protocol file, amendments, the current protocol."""

from __future__ import annotations

import dataclasses
import hashlib
import tomllib
from pathlib import Path

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from trialmgr.db.models_accounts import ProtocolVersion, Site, Trial
from trialmgr.domain.errors import NotFound
from trialmgr.domain.protocol import Protocol, parse_protocol
from trialmgr.protocols import load_protocol_file
from trialmgr.services import audit
from trialmgr.services.context import Actor

_PARSED: dict[str, Protocol] = {}  # sha256 -> parsed protocol; versions never change once loaded


def _parse_text(text: str, sha256: str) -> Protocol:
    proto = _PARSED.get(sha256)
    if proto is None:
        proto = dataclasses.replace(parse_protocol(tomllib.loads(text)), sha256=sha256)
        if len(_PARSED) > 64:
            _PARSED.clear()
        _PARSED[sha256] = proto
    return proto


def protocol_from_version(version: ProtocolVersion) -> Protocol:
    return _parse_text(version.source_text, version.sha256)


def current_version(session: Session, trial_id: str) -> ProtocolVersion:
    version = session.scalar(select(ProtocolVersion).where(ProtocolVersion.trial_id == trial_id)
                             .order_by(ProtocolVersion.number.desc()).limit(1))
    if version is None:
        raise NotFound(f"unknown trial {trial_id!r}")
    return version


_SHA = "trialmgr.protocol_sha"  # session.info: trial id -> current protocol hash, for this transaction only
_TRIALS = "trialmgr.trials"  # session.info: trial id -> Trial read with other rows (held: the identity map is weak)


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_SHA, None)
        session.info.pop(_TRIALS, None)


def current_sha_column(trial_id_column):
    """A scalar subquery: the hash of the trial's current protocol version (to read it with other rows)."""
    return (select(ProtocolVersion.sha256).where(ProtocolVersion.trial_id == trial_id_column)
            .order_by(ProtocolVersion.number.desc()).limit(1).scalar_subquery())


def remember(session: Session, trial: Trial, sha: str | None) -> None:
    """Keep a trial row and its current protocol's hash, read together with other rows, for the rest of this
    transaction: get_trial (require_open ...) then finds the row in the session, current_protocol the hash."""
    session.info.setdefault(_TRIALS, {})[trial.id] = trial
    if sha is not None:
        session.info.setdefault(_SHA, {})[trial.id] = sha


def current_protocol(session: Session, trial_id: str) -> Protocol:
    """The trial's current protocol; the hot paths fetch only its hash once it has been parsed (or not even
    that, when the transaction read it with its first rows: remember_current_sha)."""
    sha = session.info.get(_SHA, {}).get(trial_id)
    if sha is None:
        sha = session.scalar(select(ProtocolVersion.sha256).where(ProtocolVersion.trial_id == trial_id)
                             .order_by(ProtocolVersion.number.desc()).limit(1))
    if sha is None:
        raise NotFound(f"unknown trial {trial_id!r}")
    cached = _PARSED.get(sha)
    return cached if cached is not None else protocol_from_version(current_version(session, trial_id))


def get_trial(session: Session, trial_id: str) -> Trial:
    trial = session.get(Trial, trial_id)
    if trial is None:
        raise NotFound(f"unknown trial {trial_id!r}")
    return trial


def list_trials(session: Session) -> list[Trial]:
    return list(session.scalars(select(Trial).order_by(Trial.id)))


def load_protocol(session: Session, actor: Actor, path: str | Path) -> tuple[ProtocolVersion, bool]:
    """Register a protocol file. A changed file becomes a new version (an amendment); old ones stay as they were.

    Returns (version, created); loading the same bytes again creates nothing.
    """
    path = Path(path)
    proto = load_protocol_file(path)  # raises ProtocolInvalid listing every mistake
    text = path.read_bytes().decode("utf-8")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    trial = session.get(Trial, proto.id)
    if trial is None:
        trial = Trial(id=proto.id, title=proto.title)
        session.add(trial)
        session.flush()
        audit.record(session, actor, "trial:create", "trial", proto.id, trial=proto.id, field="title",
                     new=proto.title)
    existing = session.scalar(select(ProtocolVersion).where(ProtocolVersion.trial_id == proto.id,
                                                            ProtocolVersion.sha256 == sha))
    if existing is not None:
        return existing, False
    number = (session.scalar(select(func.max(ProtocolVersion.number))
                             .where(ProtocolVersion.trial_id == proto.id)) or 0) + 1
    version = ProtocolVersion(trial_id=proto.id, number=number, label=proto.version, sha256=sha,
                              source_name=path.name, source_text=text, loaded_by=actor.username)
    session.add(version)
    session.info.get(_SHA, {}).pop(proto.id, None)  # a new current version from now on
    session.flush()
    audit.record(session, actor, "protocol:load" if number == 1 else "protocol:amend", "protocol_version",
                 version.id, trial=proto.id, field="sha256", new=sha,
                 reason=None if number == 1 else f"amendment to version {proto.version} from {path.name}")
    if trial.title != proto.title:
        audit.record(session, actor, "trial:update", "trial", proto.id, trial=proto.id, field="title",
                     old=trial.title, new=proto.title)
        trial.title = proto.title
    _sync_sites(session, actor, proto)
    return version, True


def _sync_sites(session: Session, actor: Actor, proto: Protocol) -> None:
    existing = {s.code: s for s in session.scalars(select(Site).where(Site.trial_id == proto.id))}
    wanted = {s.code: s for s in proto.sites}
    for code, spec in wanted.items():
        site = existing.get(code)
        if site is None:
            session.add(Site(trial_id=proto.id, code=code, name=spec.name, active=True))
            audit.record(session, actor, "site:create", "site", code, trial=proto.id, field="name", new=spec.name)
        else:
            if site.name != spec.name:
                audit.record(session, actor, "site:update", "site", code, trial=proto.id, field="name",
                             old=site.name, new=spec.name)
                site.name = spec.name
            if not site.active:
                audit.record(session, actor, "site:update", "site", code, trial=proto.id, field="active",
                             old="false", new="true")
                site.active = True
    for code, site in existing.items():
        # A site dropped by an amendment is closed, never deleted: its participants keep their history.
        if code not in wanted and site.active:
            audit.record(session, actor, "site:update", "site", code, trial=proto.id, field="active",
                         old="true", new="false")
            site.active = False
    session.flush()


def sites(session: Session, trial_id: str) -> list[Site]:
    return list(session.scalars(select(Site).where(Site.trial_id == trial_id).order_by(Site.code)))


def require_open(session: Session, trial_id: str) -> Trial:
    """Refuse new data unless the trial's data are open (frozen and locked data take none)."""
    from trialmgr.domain.errors import DataLocked
    from trialmgr.domain.vocab import DataState

    trial = get_trial(session, trial_id)
    if trial.data_state is not DataState.OPEN:
        raise DataLocked(f"the data of {trial_id} are {trial.data_state.value}: no new data can be entered")
    return trial


def require_not_locked(session: Session, trial_id: str) -> Trial:
    """Refuse changes once the data are locked (frozen data still take query answers and monitoring)."""
    from trialmgr.domain.errors import DataLocked
    from trialmgr.domain.vocab import DataState

    trial = get_trial(session, trial_id)
    if trial.data_state is DataState.LOCKED:
        raise DataLocked(f"the data of {trial_id} are locked: nothing can be changed until an investigator "
                         "unlocks them")
    return trial
