from __future__ import annotations

import json
import logging


def test_healthz_reports_database_migrations_and_keys(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "checks": {"database": "ok", "migrations": "ok",
                                                          "audit_signing_key": "ok", "allocation_key": "ok",
                                                          "credentials_key": "ok"}}


def test_healthz_says_what_is_missing(app, tmp_path):
    import dataclasses

    st = app.extensions["trialmgr"]
    st.settings = dataclasses.replace(st.settings, instance_path=tmp_path)
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["checks"]["audit_signing_key"] == body["checks"]["credentials_key"] == "missing"
    assert body["status"] == "unavailable"
    assert str(tmp_path) not in resp.get_data(as_text=True)


def test_request_log_lines_are_json_with_request_id(client, caplog):
    from trialmgr.web.ops import JsonFormatter

    with caplog.at_level(logging.INFO, logger="trialmgr.request"):
        resp = client.get("/login", headers={"X-Request-ID": "abcdef123456"})
    assert resp.headers["X-Request-ID"] == "abcdef123456"
    record = next(r for r in caplog.records if r.name == "trialmgr.request")
    doc = json.loads(JsonFormatter().format(record))
    assert doc["request_id"] == "abcdef123456" and doc["status"] == 200 and doc["path"] == "/login"
