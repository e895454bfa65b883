"""teams: API keys, comments, login failures, incidents.assignee

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("incidents", sa.Column("assignee", sa.String(64)))
    op.create_index("ix_incidents_assignee_created", "incidents", ["assignee", "created_at", "id"])
    op.create_index(
        "ix_incidents_created_by_created", "incidents", ["created_by", "created_at", "id"]
    )
    op.create_table(
        "api_keys",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("name", sa.String(60), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("last_used_at", Time),
        sa.Column("revoked_at", Time),
    )
    op.create_table(
        "comments",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("incident_id", sa.BigInteger(), sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", Time, nullable=False),
    )
    op.create_index("ix_comments_incident", "comments", ["incident_id", "id"])
    op.create_table(
        "login_failures",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("window_start", Time, nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
    )
    op.create_index("ix_login_failures_window_start", "login_failures", ["window_start"])


def downgrade() -> None:
    op.drop_table("login_failures")
    op.drop_table("comments")
    op.drop_table("api_keys")
    op.drop_index("ix_incidents_created_by_created", "incidents")
    op.drop_index("ix_incidents_assignee_created", "incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("assignee")
