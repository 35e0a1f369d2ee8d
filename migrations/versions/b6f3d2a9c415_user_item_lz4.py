"""user_item: large payloads compressed with lz4 on PostgreSQL

Revision ID: b6f3d2a9c415
Revises: a1e47b0c0018
Create Date: 2026-12-02 21:40:00.000000

Only the catalog changes (no rewrite): rows already stored keep pglz, new ones get lz4, and both read
back alike. A PostgreSQL without lz4 (before 14, or built without it) and SQLite are left as they were.
The server decides, in a DO block, so that `flask db upgrade --sql` writes the same check.

The ALTER takes an ACCESS EXCLUSIVE lock on user_item for an instant, but waits for every open
transaction on it (a polling job's batch, a page's query), and all new ones queue behind it: so it
gives up after LOCK_TIMEOUT rather than stall the app, and the deploy fails, to be run again.

The same is done for create_all() by app.models.compress_with_lz4; this migration keeps its own copy
of the statement, as migrations do, so that it never changes after it has run.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'b6f3d2a9c415'
down_revision = 'a1e47b0c0018'
branch_labels = None
depends_on = None

COLUMNS = ("data_text", "data_bytes", "attributes_json", "raw_message")
LOCK_TIMEOUT = "10s"


def _set_compression(method):
    if op.get_context().dialect.name != "postgresql":
        return
    alter = "ALTER TABLE user_item " + ", ".join(f"ALTER COLUMN {column} SET COMPRESSION {method}"
                                                for column in COLUMNS)
    op.execute(f"""
        DO $$
        DECLARE
            previous text := current_setting('lock_timeout');
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_settings
                       WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
                PERFORM set_config('lock_timeout', '{LOCK_TIMEOUT}', true);
                {alter};
                PERFORM set_config('lock_timeout', previous, true);
            END IF;
        END
        $$
    """)


def upgrade():
    _set_compression("lz4")


def downgrade():
    _set_compression("default")
