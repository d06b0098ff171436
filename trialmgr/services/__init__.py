"""Use cases: f(session, actor, ...). They flush, never commit, and write the audit entry with the change."""
