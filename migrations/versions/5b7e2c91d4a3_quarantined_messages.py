"""quarantined messages

Revision ID: 5b7e2c91d4a3
Revises: 90ab819f910d
Create Date: 2026-12-01 21:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '5b7e2c91d4a3'
down_revision = '90ab819f910d'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('user_item', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quarantine_reason', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('raw_message', sa.LargeBinary(), nullable=True))

    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quarantined_count', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_column('quarantined_count')

    with op.batch_alter_table('user_item', schema=None) as batch_op:
        batch_op.drop_column('raw_message')
        batch_op.drop_column('quarantine_reason')
