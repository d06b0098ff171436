"""Key files in the instance folder: created once, mode 0600, never logged, never in the database."""

from __future__ import annotations

from pathlib import Path

from trialmgr.config import Settings, write_private_file

AUDIT_KEY_FILE = "audit_signing_key.pem"
AUDIT_PUBLIC_DIR = "audit_public_keys"
ALLOCATION_KEY_FILE = "allocation.key"
CREDENTIALS_KEY_FILE = "credentials.key"


class KeyMissing(Exception):
    """A key file the operation needs is not in the instance folder."""


def _path(settings: Settings, name: str) -> Path:
    return settings.instance_path / name


def ensure_audit_key(settings: Settings) -> None:
    from trialmgr.domain import audit

    path = _path(settings, AUDIT_KEY_FILE)
    if path.exists():
        return
    key = audit.generate_signing_key()
    write_private_file(path, audit.private_key_to_pem(key))
    _remember_public_key(settings, key.public_key())


def _remember_public_key(settings: Settings, public_key) -> None:
    """Every public key ever used stays on file so checkpoints signed before a rotation still verify."""
    from trialmgr.domain import audit

    folder = _path(settings, AUDIT_PUBLIC_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{audit.key_id(public_key)}.pem").write_bytes(audit.public_key_pem(public_key))


def audit_private_key(settings: Settings):
    from trialmgr.domain import audit

    path = _path(settings, AUDIT_KEY_FILE)
    if not path.exists():
        raise KeyMissing(f"audit signing key not found at {path}: run `trialmgr init`")
    return audit.load_private_key_pem(path.read_bytes())


def audit_public_keys(settings: Settings) -> dict:
    """key id -> public key, for the current key and every earlier one."""
    from trialmgr.domain import audit

    keys = {}
    folder = _path(settings, AUDIT_PUBLIC_DIR)
    if folder.is_dir():
        for pem in sorted(folder.glob("*.pem")):
            pub = audit.load_public_key_pem(pem.read_bytes())
            keys[audit.key_id(pub)] = pub
    if _path(settings, AUDIT_KEY_FILE).exists():
        pub = audit_private_key(settings).public_key()
        keys[audit.key_id(pub)] = pub
    return keys


def rotate_audit_key(settings: Settings) -> str:
    """Replace the signing key; the old public key stays on file. Returns the new key id."""
    from trialmgr.domain import audit

    path = _path(settings, AUDIT_KEY_FILE)
    if path.exists():
        _remember_public_key(settings, audit_private_key(settings).public_key())
        path.rename(path.with_suffix(".pem.retired"))
    key = audit.generate_signing_key()
    write_private_file(path, audit.private_key_to_pem(key))
    _remember_public_key(settings, key.public_key())
    return audit.key_id(key.public_key())


def ensure_allocation_key(settings: Settings) -> None:
    from trialmgr.domain import concealment

    path = _path(settings, ALLOCATION_KEY_FILE)
    if not path.exists():
        write_private_file(path, concealment.new_allocation_key())


def allocation_key(settings: Settings) -> bytes:
    path = _path(settings, ALLOCATION_KEY_FILE)
    if not path.exists():
        raise KeyMissing(f"allocation key not found at {path}: run `trialmgr init`")
    return path.read_bytes()


def allocation_key_id(key: bytes) -> str:
    """A short fingerprint naming an allocation key in the audit trail (it reveals nothing about the key)."""
    import hashlib

    return hashlib.sha256(b"trialmgr allocation key id|" + key).hexdigest()[:16]


class RotationPending(Exception):
    """An earlier allocation key rotation was interrupted; the operator must settle it first (docs/keys.md)."""


def _staged_allocation_path(settings: Settings) -> Path:
    return _path(settings, ALLOCATION_KEY_FILE + ".new")


def stage_allocation_key(settings: Settings) -> bytes:
    """Write a new allocation key beside the current one (allocation.key.new, 0600) before the database is
    re-encrypted, so the key the database will need exists on disk before any row depends on it."""
    from trialmgr.domain import concealment

    allocation_key(settings)  # the current key must be there
    staged = _staged_allocation_path(settings)
    if staged.exists():
        raise RotationPending(f"{staged} exists: an earlier rotation did not finish; see docs/keys.md")
    key = concealment.new_allocation_key()
    write_private_file(staged, key)
    return key


def discard_staged_allocation_key(settings: Settings) -> None:
    """The re-encryption was rolled back: the database still needs the current key; drop the new one."""
    _staged_allocation_path(settings).unlink(missing_ok=True)


def commit_allocation_key(settings: Settings, stamp: str) -> Path:
    """After the re-encryption committed: the new key becomes allocation.key and the old one is kept as
    allocation.key.retired-<stamp> until the operator deletes it. Returns the retired file's path."""
    path = _path(settings, ALLOCATION_KEY_FILE)
    retired = path.with_name(f"{ALLOCATION_KEY_FILE}.retired-{stamp}")
    path.rename(retired)
    _staged_allocation_path(settings).rename(path)
    return retired


def ensure_credentials_key(settings: Settings) -> None:
    from trialmgr.domain import concealment

    path = _path(settings, CREDENTIALS_KEY_FILE)
    if not path.exists():
        write_private_file(path, concealment.new_allocation_key())  # (a random AES-256 key like any other)


def credentials_key(settings: Settings) -> bytes:
    """The AES-256-GCM key sealing users' TOTP secrets in the database (services/twofactor.py)."""
    path = _path(settings, CREDENTIALS_KEY_FILE)
    if not path.exists():
        raise KeyMissing(f"credentials key not found at {path}: run `trialmgr init`")
    return path.read_bytes()


def ensure_all(settings: Settings) -> None:
    ensure_audit_key(settings)
    ensure_allocation_key(settings)
    ensure_credentials_key(settings)
