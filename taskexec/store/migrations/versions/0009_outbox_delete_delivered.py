"""outbox: a delivered row is deleted, not marked; the table holds only what is still to be sent

Before, a delivered row stayed for good with its `delivered_at` set: the table grew by three rows a task
with no sweep to trim it, and marking a row wrote a new row version and its index entries. Deleting it
writes one WAL record and no index entry. The (event_id, target) unique constraint goes too: event ids
are generated per event (uuid4), and its index was a random-order insert for every event. The task's
events stay in `task_events`, its audit trail.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 06:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM outbox WHERE delivered_at IS NOT NULL")
    op.drop_index('ix_outbox_pending', table_name='outbox')
    op.drop_constraint('outbox_event_id_target_key', 'outbox', type_='unique')
    op.drop_column('outbox', 'delivered_at')
    op.create_index('ix_outbox_pending', 'outbox', ['next_attempt_at'])


def downgrade() -> None:
    op.drop_index('ix_outbox_pending', table_name='outbox')
    op.add_column('outbox', sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True))
    op.create_unique_constraint('outbox_event_id_target_key', 'outbox', ['event_id', 'target'])
    op.create_index('ix_outbox_pending', 'outbox', ['next_attempt_at'], postgresql_where=sa.text('delivered_at IS NULL'))
