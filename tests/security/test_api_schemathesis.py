"""Schemathesis against the JSON API, in process (WSGI): every operation in /api/v1/openapi.json, as every role
its route declares, with generated requests. No response may be a server error, and every response must match
the document: a documented status code, content type and body schema.

Path parameters are either generated or the real ones of a small trial (so requests reach the services, not
only the 404 for an unknown participant). Each operation gets a bounded number of examples; the whole test
stays well under a minute per engine. Runs in the suite, so CI runs it on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import re
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from trialmgr.domain.vocab import Role
from trialmgr.services import accounts
from trialmgr.services.context import cli_actor
from trialmgr.web.access import AUTHENTICATED, declared_access

T = "hip-pt-clbp"
USERS = {
    Role.ADMIN: ("sada", f"{T}:admin"),
    Role.INVESTIGATOR: ("sivo", f"{T}:investigator"),
    Role.COORDINATOR: ("scody", f"{T}:coordinator@DE"),
    Role.ASSESSOR: ("sasa", f"{T}:assessor@DE"),
    Role.MONITOR: ("smoe", f"{T}:monitor"),
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 10}


@pytest.fixture
def api_world(app, db, make_user, randomized):
    code = randomized("DE", "F")
    tokens = {}
    for role, (username, spec) in USERS.items():
        make_user(username, spec)
        with db.session() as s:
            tokens[role] = accounts.create_token(s, cli_actor(), accounts.get_user(s, username), trial_id=T,
                                                 role=role.value, name="schemathesis")[1]
    real = {"trial": T, "participant": code, "visit": "BL", "form": "pain", "instance": 1, "screening": 1,
            "query": 1}
    return tokens, real


def _roles_for(app, operation) -> list[Role]:
    """The roles the route behind this operation declares (every role for AUTHENTICATED ones)."""
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule.removeprefix("/api/v1"))
        if rule.endpoint.startswith("api.") and path == operation.path and operation.method.upper() in rule.methods:
            access = declared_access(app, rule.endpoint)
            if access.public:
                return [Role.MONITOR]  # any token; the route ignores it
            return list(Role) if AUTHENTICATED in access.who else sorted(access.roles(), key=list(Role).index)
    raise AssertionError(f"{operation.method.upper()} {operation.path} has no route")


def test_api_conforms_to_its_openapi_document_under_generated_requests(app, api_world):
    tokens, real = api_world
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    started = time.monotonic()
    failures: list[str] = []
    calls = 0
    statuses: dict[int, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        fixed = {name: real[name] for name in re.findall(r"{(\w+)}", operation.path) if name in real}
        for role in _roles_for(app, operation):
            headers = {"Authorization": f"Bearer {tokens[role]}"}
            for mode, examples in EXAMPLES.items():
                strategy = st.one_of(operation.as_strategy(generation_mode=mode),
                                     operation.as_strategy(generation_mode=mode, path_parameters=fixed))

                @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def run(case):
                    nonlocal calls
                    calls += 1
                    response = case.call_and_validate(headers=headers, checks=CHECKS)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

                try:
                    run()
                except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  (collect all, report all)
                    failures.append(f"{operation.method.upper()} {operation.path} as {role.value} ({mode.value}): "
                                    f"{str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
    assert calls > 200
    # The generated requests reach the services, not only the input checks: some succeed.
    assert statuses.get(200, 0) + statuses.get(201, 0) > 50, statuses
    assert time.monotonic() - started < 120
