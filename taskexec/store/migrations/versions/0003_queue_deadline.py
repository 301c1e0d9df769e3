"""queued timeout: when a PENDING task stops waiting for a worker

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:00:00.000000
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows already PENDING keep NULL: the `queued` sweep gives them `available_at + TEL_QUEUED_TIMEOUT`.
    with op.batch_alter_table('task_instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('queue_deadline', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_task_instances_queue_deadline', ['status', 'queue_deadline'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('task_instances', schema=None) as batch_op:
        batch_op.drop_index('ix_task_instances_queue_deadline')
        batch_op.drop_column('queue_deadline')
