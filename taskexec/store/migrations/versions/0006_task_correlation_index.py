"""index on task_instances.correlation_id (the task list's correlationId filter and search)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 21:30:00.000000
"""
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('task_instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_instances_correlation_id'), ['correlation_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('task_instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_instances_correlation_id'))
