"""Each attempt's story: the worker that ran it, its stages as timed and the traceback it
ended with; the job
a webhook delivery serves (``jobs.parent_id``), so a job's page lists its deliveries.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.add_column(sa.Column("worker", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("traceback", sa.Text(), nullable=True))
        batch.add_column(sa.Column("stages", sa.JSON(), nullable=True))
    op.add_column("jobs", sa.Column("parent_id", sa.String(length=32), nullable=True))
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_parent_id", table_name="jobs")
    # SQLite's batch mode copies the table from what it reflects, which leaves out the
    # expression index: drop it first and make it again after.
    op.drop_index("ix_jobs_short_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("parent_id")
    op.create_index("ix_jobs_short_id", "jobs", [sa.text("substr(id, 25)")])
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("stages")
        batch.drop_column("traceback")
        batch.drop_column("worker")
