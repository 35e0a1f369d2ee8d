"""per-subscription retention days

Revision ID: d4e7a1c93b20
Revises: e4d81f3a6c27
Create Date: 2026-12-01 21:30:00

Subscription.retention_days: how many days a user's messages of that subscription are kept
(0: forever); NULL follows MESSAGE_RETENTION_DAYS (app.retention).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd4e7a1c93b20'
down_revision = 'e4d81f3a6c27'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retention_days', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.drop_column('retention_days')
