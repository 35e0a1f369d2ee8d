"""task state; subscriptions stored by their full path

Revision ID: 5b1f0c7d2e93
Revises: 5b7e2c91d4a3
Create Date: 2026-12-01 21:10:00

Adds Task.state, state_reason, state_changed_at and dismissed, with the state
of existing tasks derived from what they recorded. Then every stored subscription name (tasks,
messages, the subscriptions list) becomes its full path, projects/P/subscriptions/S, with P the
app's GCP_PROJECT_ID, so the short and the full name are one subscription everywhere.
"""
from alembic import op
import sqlalchemy as sa
from flask import current_app


# revision identifiers, used by Alembic.
revision = '5b1f0c7d2e93'
down_revision = '5b7e2c91d4a3'
branch_labels = None
depends_on = None


def full_path(column, project: str):
    return sa.literal(f"projects/{project}/subscriptions/") + column


def upgrade():
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=16), server_default='queued', nullable=False))
        batch_op.add_column(sa.Column('state_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('state_changed_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('dismissed', sa.Boolean(), server_default=sa.false(), nullable=False))

    task = sa.table('task', sa.column('complete', sa.Boolean), sa.column('last_error', sa.Text),
                    sa.column('state', sa.String), sa.column('state_reason', sa.Text),
                    sa.column('finished_at', sa.DateTime), sa.column('started_at', sa.DateTime),
                    sa.column('state_changed_at', sa.DateTime), sa.column('subscription', sa.String))
    op.execute(task.update().where(task.c.complete.is_(False)).values(
        state='polling', state_changed_at=task.c.started_at))
    op.execute(task.update().where(task.c.complete.is_(True), task.c.last_error.is_(None)).values(
        state='finished', state_changed_at=task.c.finished_at))
    op.execute(task.update().where(task.c.complete.is_(True), task.c.last_error.is_not(None)).values(
        state='failed', state_reason=task.c.last_error, state_changed_at=task.c.finished_at))

    project = current_app.config['GCP_PROJECT_ID']
    op.execute(task.update().where(task.c.subscription.not_like('projects/%')).values(
        subscription=full_path(task.c.subscription, project)))

    item = sa.table('user_item', sa.column('id', sa.Integer), sa.column('subscription', sa.String),
                    sa.column('message_id', sa.String), sa.column('publish_time', sa.DateTime))
    # A message stored under both names is one message: keep the row already under the full path.
    other = item.alias('other')
    op.execute(item.delete().where(
        item.c.subscription.not_like('projects/%'),
        sa.exists().where(other.c.subscription == full_path(item.c.subscription, project),
                          other.c.message_id == item.c.message_id,
                          other.c.publish_time == item.c.publish_time),
    ))
    op.execute(item.update().where(item.c.subscription.not_like('projects/%')).values(
        subscription=full_path(item.c.subscription, project)))

    listed = sa.table('subscription', sa.column('user_id', sa.Integer), sa.column('name', sa.String))
    other_listed = listed.alias('other')
    op.execute(listed.delete().where(
        listed.c.name.not_like('projects/%'),
        sa.exists().where(other_listed.c.user_id == listed.c.user_id,
                          other_listed.c.name == full_path(listed.c.name, project)),
    ))
    op.execute(listed.update().where(listed.c.name.not_like('projects/%')).values(
        name=full_path(listed.c.name, project)))


def downgrade():
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_column('dismissed')
        batch_op.drop_column('state_changed_at')
        batch_op.drop_column('state_reason')
        batch_op.drop_column('state')
