"""Running a verification on request and remembering its outcome as an audit entry ("audit:verify")."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trialmgr.db.models_audit import AuditEntry
from trialmgr.services import audit, audit_query, integrity
from trialmgr.services.context import Actor


def run(session: Session, actor: Actor, public_keys: dict, trial: str) -> dict:
    report = audit_query.verify(session, public_keys, trial)
    problems = integrity.check_data(session, trial) if report.ok else []
    result = {
        "ok": bool(report.ok and not problems),
        "entries": report.entries,
        "checkpoints": report.checkpoints,
        "chains": report.chains,
        "problem": None if report.ok else {
            "kind": str(report.problem.kind), "seq": report.problem.seq, "chain": report.problem.chain,
            "message": report.problem.message},
        "data_mismatches": problems,
    }
    summary = ("verified" if result["ok"] else
               f"BROKEN: {result['problem']['message'] if result['problem'] else problems[0]}")
    audit.record(session, actor, "audit:verify", "audit", trial, trial=trial, field="integrity",
                 new=f"{summary} ({report.entries} entries, {report.checkpoints} checkpoints)"[:2000])
    return result


def last(session: Session, trial: str) -> AuditEntry | None:
    return session.scalars(select(AuditEntry).where(AuditEntry.trial == trial, AuditEntry.action == "audit:verify")
                           .order_by(AuditEntry.seq.desc()).limit(1)).first()
