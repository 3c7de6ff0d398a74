"""Tokens in a table of their own (several per user, revocable); admin users.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tokens_token_hash", "tokens", ["token_hash"], unique=True)
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    # Every user's one token moves over (its id may equal the user's: ids never collide).
    op.execute("INSERT INTO tokens (id, user_id, token_hash, label, created_at) "
               "SELECT id, id, token_hash, '', created_at FROM users")
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.drop_index("ix_users_token_hash")
        batch.drop_column("token_hash")


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(length=64), nullable=True))
    # A user keeps the oldest of their tokens; the others are lost with the table.
    op.execute("UPDATE users SET token_hash = (SELECT t.token_hash FROM tokens t "
               "WHERE t.user_id = users.id ORDER BY t.created_at LIMIT 1)")
    op.execute("DELETE FROM users WHERE token_hash IS NULL")
    with op.batch_alter_table("users") as batch:
        batch.alter_column("token_hash", existing_type=sa.String(length=64), nullable=False)
        batch.create_index("ix_users_token_hash", ["token_hash"], unique=True)
        batch.drop_column("is_admin")
    op.drop_index("ix_tokens_user_id", table_name="tokens")
    op.drop_index("ix_tokens_token_hash", table_name="tokens")
    op.drop_table("tokens")
