"""Resume secret: a lab participant resumes only with the secret returned at creation.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SHA-256 hex of the secret; NULL for participants created before this revision.
    op.add_column("participants", sa.Column("resume_secret_hash", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("participants") as batch:
        batch.drop_column("resume_secret_hash")
