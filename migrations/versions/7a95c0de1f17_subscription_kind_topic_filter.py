"""subscription kind, topic and filter

Revision ID: 7a95c0de1f17
Revises: d4e7a1c93b20
Create Date: 2026-12-02 00:00:00

Subscription.kind: "existing" (a subscription someone else made, which the user polls and so
shares with its other consumers) or "tap" (one the app created for the user on a topic, and
deletes when the user removes it). Subscription.topic and .filter record the topic's full path
and the Pub/Sub filter expression, as Pub/Sub reported or was given them; NULL when unknown.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '7a95c0de1f17'
down_revision = 'd4e7a1c93b20'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='existing'))
        batch_op.add_column(sa.Column('topic', sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column('filter', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('subscription', schema=None) as batch_op:
        batch_op.drop_column('filter')
        batch_op.drop_column('topic')
        batch_op.drop_column('kind')
