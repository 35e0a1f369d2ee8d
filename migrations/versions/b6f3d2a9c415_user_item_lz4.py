"""user_item: large payloads compressed with lz4 on PostgreSQL

Revision ID: b6f3d2a9c415
Revises: a1e47b0c0018
Create Date: 2026-12-02 21:40:00.000000

Only the catalog changes (no rewrite): rows already stored keep pglz, new ones get lz4, and both read
back alike. A PostgreSQL without lz4 (before 14, or built without it) and SQLite are left as they were.
The same is done for create_all() by app.models.compress_with_lz4; this migration keeps its own copy
of the statement, as migrations do, so that it never changes after it has run.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b6f3d2a9c415'
down_revision = 'a1e47b0c0018'
branch_labels = None
depends_on = None

COLUMNS = ("data_text", "data_bytes", "attributes_json", "raw_message")


def _set_compression(method):
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not bind.scalar(sa.text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")):
        return
    op.execute("ALTER TABLE user_item " + ", ".join(f"ALTER COLUMN {column} SET COMPRESSION {method}"
                                                    for column in COLUMNS))


def upgrade():
    _set_compression("lz4")


def downgrade():
    _set_compression("default")
