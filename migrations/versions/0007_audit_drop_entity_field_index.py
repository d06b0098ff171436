"""Audit entries: drop the (trial, entity_type, entity_id, field, seq) index

Its keys of one form save (one entity, twenty fields) land on twenty different leaf pages, which made it the most
expensive index to maintain on every save (bench/bench_form_save_audit.py), while no query needs it: the per-field
history is one participant's entries (the participant index), the form and field filters of the monitor's page
walk the (trial, seq) index newest first, and the data check reads every form entry in seq order.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""
from __future__ import annotations

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_audit_entry_trial_entity_field', table_name='audit_entry')


def downgrade() -> None:
    op.create_index('ix_audit_entry_trial_entity_field', 'audit_entry',
                    ['trial', 'entity_type', 'entity_id', 'field', 'seq'], unique=False)
