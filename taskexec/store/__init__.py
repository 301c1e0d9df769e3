"""PostgreSQL: engine and sessions, models, migrations, the state machine, outbox rows, read-only statistics,
credentials, and the narrow interface the task services are written against.
"""
