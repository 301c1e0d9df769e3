"""api_keys changes NOTIFY the router processes (their verified-key caches are cleared at once)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 23:50:00
"""
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CHANNEL = 'taskexec_api_keys'  # taskexec.store.keywatch.CHANNEL


def upgrade() -> None:
    op.execute(f"""
        CREATE FUNCTION taskexec_api_keys_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER api_keys_changed AFTER UPDATE OR DELETE OR TRUNCATE ON api_keys
        FOR EACH STATEMENT EXECUTE FUNCTION taskexec_api_keys_changed()""")


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS api_keys_changed ON api_keys")
    op.execute("DROP FUNCTION IF EXISTS taskexec_api_keys_changed()")
