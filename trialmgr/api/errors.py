"""DomainError -> HTTP status and a JSON error body, in one place for the API."""

from __future__ import annotations

from flask import jsonify

from trialmgr.domain import errors as E

STATUS: list[tuple[type[Exception], int]] = [
    (E.ValidationFailed, 422),
    (E.ProtocolInvalid, 422),
    (E.NotEligible, 422),
    (E.ConsentMissing, 422),
    (E.ReasonRequired, 422),
    (E.NotFound, 404),
    (E.PermissionDenied, 403),
    (E.AlreadyRandomized, 409),
    (E.ListExhausted, 409),
    (E.NoAllocationList, 409),
    (E.DataLocked, 409),
    (E.Conflict, 409),
    (E.DomainError, 400),
]


def status_for(exc: Exception) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def json_error(status: int, code: str, message: str, fields: dict | None = None):
    body = {"error": {"code": code, "message": message}}
    if fields:
        body["error"]["fields"] = fields
    response = jsonify(body)
    response.status_code = status
    return response


def domain_error_response(exc: E.DomainError):
    fields = getattr(exc, "errors", None)
    if isinstance(fields, list):
        fields = {"protocol": fields}
    return json_error(status_for(exc), getattr(exc, "code", "error"), str(exc), fields)
