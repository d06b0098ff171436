from __future__ import annotations

import stat

import pytest

from trialmgr import create_app
from trialmgr.config import SettingsError, ensure_secret_key, load_settings


def test_defaults_then_instance_file_then_environment(tmp_path):
    (tmp_path / "trialmgr.toml").write_text('session_idle_minutes = 20\nsmtp_host = "mail.local"\n')
    s = load_settings({"instance_path": tmp_path}, environ={"TRIALMGR_SESSION_IDLE_MINUTES": "10"})
    assert s.session_idle_minutes == 10  # environment beats the instance file
    assert s.smtp_host == "mail.local"  # instance file beats the default
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'trialmgr.db'}"
    with pytest.raises(Exception):  # frozen
        s.smtp_host = "x"  # type: ignore[misc]


def test_instance_from_environment(tmp_path):
    s = load_settings(environ={"TRIALMGR_INSTANCE": str(tmp_path), "TRIALMGR_DATABASE_URL": "sqlite://"})
    assert s.instance_path == tmp_path.resolve()
    assert s.database_url == "sqlite://"


def test_unknown_setting_and_bad_values_are_named(tmp_path):
    (tmp_path / "trialmgr.toml").write_text("colour = 'blue'\n")
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        load_settings({"instance_path": tmp_path}, environ={})
    with pytest.raises(SettingsError, match="session_idle_minutes"):
        load_settings({"instance_path": tmp_path / "x"}, environ={"TRIALMGR_SESSION_IDLE_MINUTES": "soon"})


def test_no_builtin_secret_key(tmp_path):
    s = load_settings({"instance_path": tmp_path, "database_url": "sqlite://"}, environ={})
    assert s.secret_key == ""
    with pytest.raises(SettingsError, match="no secret key"):
        create_app(s)


def test_secret_key_generated_once_with_mode_0600(tmp_path):
    s = ensure_secret_key(load_settings({"instance_path": tmp_path / "inst"}, environ={}))
    key_file = tmp_path / "inst" / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(s.secret_key) >= 40
    again = ensure_secret_key(load_settings({"instance_path": tmp_path / "inst"}, environ={}))
    assert again.secret_key == s.secret_key
    assert load_settings({"instance_path": tmp_path / "inst"}, environ={}).secret_key == s.secret_key
