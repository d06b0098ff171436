"""TOTP secrets sealed (AES-256-GCM under the instance's credentials key): room for the sealed form

The secrets themselves are sealed by `trialmgr init` (services/twofactor.seal_legacy_secrets) or at each user's
next sign-in: the key is in the instance folder, which a migration does not read.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.alter_column('totp_secret', existing_type=sa.String(length=64), type_=sa.String(length=128),
                              existing_nullable=True)


def downgrade() -> None:
    # A sealed secret (83 characters) does not fit the old column: downgrading needs the secrets unsealed first.
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.alter_column('totp_secret', existing_type=sa.String(length=128), type_=sa.String(length=64),
                              existing_nullable=True)
