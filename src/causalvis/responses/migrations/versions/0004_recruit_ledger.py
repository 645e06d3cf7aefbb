"""Recruitment ledger: every approve / reject / return / bonus / HIT sent to a platform.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recruit_actions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(128), nullable=False),
        sa.Column("participant", sa.String(128)),
        sa.Column("amount", sa.Integer),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("remote_id", sa.String(128)),
        sa.Column("detail", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("done_at", sa.DateTime),
        sa.UniqueConstraint("platform", "kind", "ref", name="uq_recruit_action"),
    )


def downgrade() -> None:
    op.drop_table("recruit_actions")
