"""partial indexes: a task's start and finish, and an event's delivery, write fewer index entries

A row version enters an index only while it can match that index's queries: the dispatcher's and the
queue-timeout sweep's indexes hold PENDING tasks, the outbox's pending index undelivered rows, and the
lookups by assignee, deadline, workflow, correlation id or Idempotency-Key the rows that have one. Under
`bench/throughput.py` a task's three row versions wrote 33 index entries, and 14 with these.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 03:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'PENDING'")
SET = ('assignee', 'due_date', 'workflow_instance_id', 'correlation_id')


def upgrade() -> None:
    op.drop_index('ix_task_instances_dispatch', table_name='task_instances')
    op.create_index('ix_task_instances_dispatch', 'task_instances', ['enqueued_at', 'available_at'],
                    postgresql_where=PENDING)
    op.drop_index('ix_task_instances_queue_deadline', table_name='task_instances')
    op.create_index('ix_task_instances_queue_deadline', 'task_instances', ['queue_deadline'],
                    postgresql_where=PENDING)
    for column in SET:
        op.drop_index(f'ix_task_instances_{column}', table_name='task_instances')
        op.create_index(f'ix_task_instances_{column}', 'task_instances', [column],
                        postgresql_where=sa.text(f'{column} IS NOT NULL'))
    op.create_index('ix_task_instances_idempotency_key', 'task_instances', ['idempotency_key'], unique=True,
                    postgresql_where=sa.text('idempotency_key IS NOT NULL'))
    op.drop_constraint('task_instances_idempotency_key_key', 'task_instances', type_='unique')
    op.drop_index('ix_outbox_pending', table_name='outbox')
    op.create_index('ix_outbox_pending', 'outbox', ['next_attempt_at'], postgresql_where=sa.text('delivered_at IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_outbox_pending', table_name='outbox')
    op.create_index('ix_outbox_pending', 'outbox', ['delivered_at', 'next_attempt_at'])
    op.create_unique_constraint('task_instances_idempotency_key_key', 'task_instances', ['idempotency_key'])
    op.drop_index('ix_task_instances_idempotency_key', table_name='task_instances')
    for column in SET:
        op.drop_index(f'ix_task_instances_{column}', table_name='task_instances')
        op.create_index(f'ix_task_instances_{column}', 'task_instances', [column])
    op.drop_index('ix_task_instances_queue_deadline', table_name='task_instances')
    op.create_index('ix_task_instances_queue_deadline', 'task_instances', ['status', 'queue_deadline'])
    op.drop_index('ix_task_instances_dispatch', table_name='task_instances')
    op.create_index('ix_task_instances_dispatch', 'task_instances', ['enqueued_at', 'available_at'])
