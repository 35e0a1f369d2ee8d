"""alert rules and alerts

Revision ID: a1e47b0c0018
Revises: 7a95c0de1f17
Create Date: 2026-12-02 00:10:00

AlertRule: a user's rule (a condition in Pub/Sub's filter language, with the data extension, on
one subscription or all of the user's) and its webhook. Alert: one firing (or a test, or a
digest of rate-limited firings) and the state of its delivery.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a1e47b0c0018'
down_revision = '7a95c0de1f17'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'alert_rule',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('subscription', sa.String(length=512), nullable=True),
        sa.Column('condition', sa.Text(), nullable=False),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('format', sa.String(length=8), nullable=False),
        sa.Column('secret', sa.String(length=128), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['user.id'], name=op.f('fk_alert_rule_user_id_user')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_alert_rule')),
    )
    with op.batch_alter_table('alert_rule', schema=None) as batch_op:
        batch_op.create_index('ix_alert_rule_user_id_enabled', ['user_id', 'enabled'], unique=False)

    op.create_table(
        'alert',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('rule_id', sa.Integer(), nullable=False),
        sa.Column('user_item_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['rule_id'], ['alert_rule.id'], name=op.f('fk_alert_rule_id_alert_rule'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_alert')),
    )
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.create_index('ix_alert_rule_id_created_at', ['rule_id', 'created_at'], unique=False)
        batch_op.create_index('ix_alert_state_next_attempt_at', ['state', 'next_attempt_at'], unique=False)


def downgrade():
    with op.batch_alter_table('alert', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_state_next_attempt_at')
        batch_op.drop_index('ix_alert_rule_id_created_at')
    op.drop_table('alert')
    with op.batch_alter_table('alert_rule', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_rule_user_id_enabled')
    op.drop_table('alert_rule')
