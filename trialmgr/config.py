"""Settings: defaults, then the instance file, then TRIALMGR_* environment variables.

Loaded once and frozen. There is no built-in secret key: `trialmgr init` writes one into the instance
folder (mode 0600) and tests pass their own.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

INSTANCE_FILE = "trialmgr.toml"
SECRET_KEY_FILE = "secret_key"


class SettingsError(Exception):
    """The configuration cannot be used; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    instance_path: Path = Path("instance")
    database_url: str = ""
    secret_key: str = ""
    protocol_dir: Path | None = None
    session_idle_minutes: int = 30
    login_max_failures: int = 5
    login_lockout_minutes: int = 15
    require_totp_roles: tuple[str, ...] = ()
    checkpoint_interval_seconds: int = 300
    list_low_warning: int = 5
    smtp_host: str = ""
    smtp_port: int = 25
    mail_from: str = "trialmgr@localhost"
    secure_cookies: bool = False
    max_content_length: int = 2 * 1024 * 1024
    testing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def key_path(self, name: str) -> Path:
        return self.instance_path / name


def _coerce(name: str, current: Any, raw: Any) -> Any:
    target = type(current)
    try:
        if isinstance(current, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, tuple):
            if isinstance(raw, str):
                return tuple(x.strip() for x in raw.split(",") if x.strip())
            return tuple(raw)
        if isinstance(current, Path) or name == "protocol_dir":
            return Path(raw)
        return target(raw) if current is not None else raw
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"setting {name}: {exc}") from None


def load_settings(overrides: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None) -> Settings:
    """Build the frozen settings. Precedence: defaults < instance file < environment < overrides."""
    env = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    instance = Path(overrides.pop("instance_path", None) or env.get("TRIALMGR_INSTANCE") or "instance")
    instance = instance.resolve()
    base = Settings(instance_path=instance)
    known = {f.name: f for f in fields(Settings) if f.name not in {"instance_path", "extra"}}
    values: dict[str, Any] = {}

    inst_file = instance / INSTANCE_FILE
    if inst_file.is_file():
        try:
            data = tomllib.loads(inst_file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{inst_file}: {exc}") from None
        for key, raw in data.items():
            if key not in known:
                raise SettingsError(f"{inst_file}: unknown setting {key!r}")
            values[key] = _coerce(key, getattr(base, key), raw)

    for name in known:
        env_name = f"TRIALMGR_{name.upper()}"
        if env_name in env:
            values[name] = _coerce(name, getattr(base, name), env[env_name])

    for key, raw in overrides.items():
        if key not in known:
            raise SettingsError(f"unknown setting {key!r}")
        values[key] = raw

    settings = replace(base, **values)
    if not settings.database_url:
        settings = replace(settings, database_url=f"sqlite:///{instance / 'trialmgr.db'}")
    if not settings.secret_key:
        key_file = instance / SECRET_KEY_FILE
        if key_file.is_file():
            settings = replace(settings, secret_key=key_file.read_text().strip())
    return settings


def ensure_secret_key(settings: Settings) -> Settings:
    """Create the instance folder and a random secret key file (0600) if none exists yet."""
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    key_file = settings.instance_path / SECRET_KEY_FILE
    if not key_file.exists():
        write_private_file(key_file, secrets.token_urlsafe(48).encode())
    if settings.secret_key:
        return settings
    return replace(settings, secret_key=key_file.read_text().strip())


def write_private_file(path: Path, data: bytes) -> None:
    """Write a key file readable by the owner only, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
