"""usernames unique ignoring case, decided by the database: a unique index on lower(username)

The application checked "is this name taken, ignoring case?" before inserting, which
concurrent creates could all pass (`case1`, `Case1` and `CASE1` were all stored). Now
the index decides, and the loser's INSERT becomes the same 409.

A database that already holds names differing only in case cannot get the index.
The upgrade then stops before changing anything and names them; the operator renames
all but one of each group (UPDATE users SET username = '<new name>' WHERE id = <id>;
that user then signs in with the new name and the same password) and migrates again.
No name is changed automatically: which account keeps it is a person's decision.

Revision ID: 0006_unique_usernames
Revises: 0005_acknowledge
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_unique_usernames"
down_revision = "0005_acknowledge"
branch_labels = None
depends_on = None

INDEX = "uq_users_username_lower"  # models.User's too (a migration never imports the app)


def upgrade() -> None:
    clashing = op.get_bind().execute(
        sa.text(
            "SELECT id, username FROM users WHERE lower(username) IN"
            " (SELECT lower(username) FROM users GROUP BY lower(username) HAVING count(*) > 1)"
            " ORDER BY lower(username), id"
        )
    )
    groups: dict[str, list[str]] = {}
    for row in clashing:
        groups.setdefault(row.username.lower(), []).append(f"{row.username!r} (id {row.id})")
    if groups:
        listed = "; ".join(", ".join(names) for names in groups.values())
        raise RuntimeError(
            "usernames must be unique ignoring case, and these are not: "
            f"{listed}. Rename all but one of each group (UPDATE users SET username ="
            " '<new name>' WHERE id = <id>), then run the upgrade again."
        )
    op.create_index(INDEX, "users", [sa.text("lower(username)")], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="users")
