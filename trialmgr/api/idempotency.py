"""Idempotency-Key for POSTs that create things: a retried request gets the first response, never a
second record. The record is written in the same transaction as the change it describes."""

from __future__ import annotations

import functools
import hashlib
import json

from flask import g, request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trialmgr.api.errors import json_error
from trialmgr.db.models_trial import IdempotencyRecord
from trialmgr.web.db import read_session

MAX_KEY = 128


def _fingerprint() -> str:
    return hashlib.sha256(b"\n".join([request.method.encode(), request.path.encode(), request.get_data()])).hexdigest()


def _replay(record: IdempotencyRecord):
    from flask import Response

    response = Response(record.body, status=record.status, mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    return response


def idempotent(view):
    """Honour an Idempotency-Key header: replay the stored response for a retry with the same key."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        g.idempotency = None
        if key is None:
            return view(*args, **kwargs)
        if not key or len(key) > MAX_KEY or not key.isprintable():
            return json_error(422, "validation_failed", "Idempotency-Key must be 1-128 printable characters",
                              {"Idempotency-Key": "must be 1-128 printable characters"})
        user = g.actor.username
        fp = _fingerprint()
        existing = read_session().get(IdempotencyRecord, (user, key))
        if existing is not None:
            if existing.fingerprint != fp:
                return json_error(422, "idempotency_key_reused",
                                  "this Idempotency-Key was already used for a different request")
            return _replay(existing)
        g.idempotency = (user, key, fp)
        try:
            return view(*args, **kwargs)
        except IntegrityError:
            # A concurrent retry with the same key committed first: answer as it did.
            from trialmgr.state import state

            with state().db.session(write=False) as fresh:
                existing = fresh.get(IdempotencyRecord, (user, key))
                if existing is None:
                    raise
                return _replay(existing)

    return wrapper


def respond(session: Session, body: dict, status: int = 200):
    """The JSON response; with an Idempotency-Key, also stored in the caller's transaction for replays."""
    from flask import Response

    text = json.dumps(body, sort_keys=True)
    if g.get("idempotency"):
        user, key, fp = g.idempotency
        session.add(IdempotencyRecord(username=user, key=key, fingerprint=fp, status=status, body=text))
    return Response(text, status=status, mimetype="application/json")
