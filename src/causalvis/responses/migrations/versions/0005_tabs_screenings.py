"""Tabs and the device check: the newest tab of a participant, and turned-away visitors.

``participants.tab_id`` is the page load (tab) that last created or resumed the
participant: answers from an older tab are refused (the study is open elsewhere).
``screenings`` counts visitors turned away by the device check before they became
participants: platform and reason only, nothing that identifies a person.

Revision ID: 0005
Revises: 0004 (the recruitment ledger)
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("participants", sa.Column("tab_id", sa.String(64)))
    op.create_table(
        "screenings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("screenings")
    with op.batch_alter_table("participants") as batch:
        batch.drop_column("tab_id")
