"""Initial schema: participants and their per-trial responses.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "participants",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("platform", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("platform_study_id", sa.String(128)),
        sa.Column("platform_session_id", sa.String(128)),
        sa.Column("mturk_submit_to", sa.String(256)),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("condition", sa.String(64), nullable=False),
        sa.Column("image_set", sa.Integer()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("consent", sa.Boolean()),
        sa.Column("instruction_time_s", sa.Float()),
        sa.Column("window_width", sa.Integer()),
        sa.Column("window_height", sa.Integer()),
        sa.Column("user_agent", sa.String(512)),
        sa.Column("feedback", sa.Text()),
        sa.Column("completion_code", sa.String(64)),
        sa.Column("outcome", sa.String(32)),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("consented_at", sa.DateTime()),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime()),
        sa.UniqueConstraint("platform", "external_id", name="uq_platform_external"),
    )
    op.create_index("ix_participants_token", "participants", ["token"], unique=True)
    op.create_index("ix_participants_session_id", "participants", ["session_id"])
    op.create_index("ix_participants_status", "participants", ["status"])
    op.create_table(
        "responses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "participant_id",
            sa.Integer(),
            sa.ForeignKey("participants.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("trial_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("choice", sa.String(1), nullable=False),
        sa.Column("confidence", sa.Integer(), nullable=False),
        sa.Column("rt_ms", sa.Integer(), nullable=False),
        sa.Column("left_option", sa.String(1)),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("shown_at", sa.DateTime()),
        sa.Column("answered_at", sa.DateTime()),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("participant_id", "trial_id", "attempt", name="uq_response_once"),
    )
    op.create_index("ix_responses_participant_id", "responses", ["participant_id"])


def downgrade() -> None:
    op.drop_table("responses")
    op.drop_table("participants")
