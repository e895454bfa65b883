"""deliveries keep their channel's id without a foreign key

On PostgreSQL the foreign key's check ran as a trigger for every delivery row written,
in the transaction of the create that wrote it (about 70 us a row), and it made a create
that raced a channel_delete fail. channel_delete deletes the channel's deliveries itself;
the sender only claims deliveries whose channel exists. SQLite never enforced the key
(its foreign_keys pragma is off), so its table stays as it is.

Revision ID: 0010_deliveries_no_channel_fk
Revises: 0009_notifications
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_deliveries_no_channel_fk"
down_revision = "0009_notifications"
branch_labels = None
depends_on = None

CONSTRAINT = "notify_deliveries_channel_id_fkey"  # PostgreSQL's name for it


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(CONSTRAINT, "notify_deliveries", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(  # rows whose channel is gone would stop the key from coming back
            sa.text("DELETE FROM notify_deliveries WHERE channel_id NOT IN "
                    "(SELECT id FROM notify_channels)")
        )  # fmt: skip
        op.create_foreign_key(
            CONSTRAINT, "notify_deliveries", "notify_channels", ["channel_id"], ["id"],
            ondelete="CASCADE",
        )  # fmt: skip
