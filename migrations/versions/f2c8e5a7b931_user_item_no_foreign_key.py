"""user_item.user_id: no foreign key; the writer checks once a batch that its task (or user) exists

Revision ID: f2c8e5a7b931
Revises: b6f3d2a9c415
Create Date: 2026-12-03 02:40:00.000000

PostgreSQL checks a foreign key row by row: for each message stored, a query of the user table,
a quarter of its CPU on a batch of 1 KB messages. app.pubsub.writer.BatchWriter checks once a batch
instead that its task (or, without one, the user) still exists, under the user's advisory lock,
which app.users.delete_user takes before it deletes the user's messages and the user.

On PostgreSQL, dropping the constraint locks user_item and user for an instant, but waits for every
open transaction on them, with new ones queued behind it: it gives up after LOCK_TIMEOUT rather than
stall the app, and the deploy fails, to be run again. SQLite copies the table (batch mode).
The downgrade puts the key back, which checks every stored message while writes to user_item wait;
it fails if a message's user no longer exists.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'f2c8e5a7b931'
down_revision = 'b6f3d2a9c415'
branch_labels = None
depends_on = None

CONSTRAINT = "fk_user_item_user_id_user"
LOCK_TIMEOUT = "10s"


def _on_postgresql(statement):
    """Run the statement with lock_timeout at LOCK_TIMEOUT, and the setting restored after it."""
    op.execute(f"""
        DO $$
        DECLARE
            previous text := current_setting('lock_timeout');
        BEGIN
            PERFORM set_config('lock_timeout', '{LOCK_TIMEOUT}', true);
            {statement};
            PERFORM set_config('lock_timeout', previous, true);
        END
        $$
    """)


def upgrade():
    if op.get_context().dialect.name == "postgresql":
        _on_postgresql(f"ALTER TABLE user_item DROP CONSTRAINT {CONSTRAINT}")
        return
    with op.batch_alter_table("user_item", schema=None) as batch_op:
        batch_op.drop_constraint(CONSTRAINT, type_="foreignkey")


def downgrade():
    if op.get_context().dialect.name == "postgresql":
        _on_postgresql(f'ALTER TABLE user_item ADD CONSTRAINT {CONSTRAINT} FOREIGN KEY (user_id) REFERENCES "user" (id)')
        return
    with op.batch_alter_table("user_item", schema=None) as batch_op:
        batch_op.create_foreign_key(CONSTRAINT, "user", ["user_id"], ["id"])
