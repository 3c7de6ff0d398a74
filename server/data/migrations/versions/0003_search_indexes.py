"""Indexes for job search: each filtered column followed by the id (the page order).

The single-column indexes on user_id and state give way to (user_id, id) and
(state, id), which serve every lookup they served and also the newest-first pages. The
short id the dashboard shows (an id's last 8 characters) gets an index of its own.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_jobs_user_id_id", "jobs", ["user_id", "id"])
    op.create_index("ix_jobs_state_id", "jobs", ["state", "id"])
    op.create_index("ix_jobs_type_id", "jobs", ["type", "id"])
    op.create_index("ix_jobs_queue_id", "jobs", ["queue", "id"])
    op.create_index("ix_jobs_short_id", "jobs", [sa.text("substr(id, 25)")])
    op.drop_index("ix_jobs_user_id", table_name="jobs")
    op.drop_index("ix_jobs_state", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_user_id", "jobs", ["user_id"])
    op.drop_index("ix_jobs_short_id", table_name="jobs")
    op.drop_index("ix_jobs_queue_id", table_name="jobs")
    op.drop_index("ix_jobs_type_id", table_name="jobs")
    op.drop_index("ix_jobs_state_id", table_name="jobs")
    op.drop_index("ix_jobs_user_id_id", table_name="jobs")
