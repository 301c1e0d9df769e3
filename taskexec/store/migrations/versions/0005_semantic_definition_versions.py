"""semantic definition versions: integer n becomes "n.0.0", with a sortable version_key

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30 21:30:00.000000

Upgrade: `task_definitions.version` and `task_instances.definition_version` become strings ("n.0.0"),
`task_definitions.version_key` (taskexec/core/semver.py) orders them in SQL.

Downgrade: back to integers. A definition whose versions are all "n.0.0" gets n back; one that has
any other version (1.2.0, registered after the upgrade) is renumbered 1, 2, 3, ... in semantic order,
and its tasks follow, so nothing is lost and the latest stays the latest.
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0003'
branch_labels = None
depends_on = None

FK = "fk_task_instances_definition"
WIDTH = 9


def _key(version: str) -> str:
    return ".".join(f"{int(part):0{WIDTH}d}" for part in version.split("."))


def _drop_definition_fk() -> None:
    """The foreign key from tasks to definitions (unnamed in 0001: found by its columns)."""
    for fk in sa.inspect(op.get_bind()).get_foreign_keys("task_instances"):
        if fk["referred_table"] == "task_definitions" and fk["name"]:
            op.drop_constraint(fk["name"], "task_instances", type_="foreignkey")


def _create_definition_fk() -> None:
    op.create_foreign_key(FK, "task_instances", "task_definitions",
                          ["definition_id", "definition_version"], ["id", "version"])


def upgrade() -> None:
    bind = op.get_bind()
    _drop_definition_fk()
    op.alter_column("task_definitions", "version", type_=sa.String(50), postgresql_using="version::text || '.0.0'")
    op.alter_column("task_instances", "definition_version", type_=sa.String(50),
                    postgresql_using="definition_version::text || '.0.0'")
    op.add_column("task_definitions", sa.Column("version_key", sa.String(32), nullable=True))
    rows = bind.execute(sa.text("SELECT id, version FROM task_definitions")).all()
    if rows:
        bind.execute(sa.text("UPDATE task_definitions SET version_key = :k WHERE id = :i AND version = :v"),
                     [{"k": _key(v), "i": i, "v": v} for i, v in rows])
    op.alter_column("task_definitions", "version_key", existing_type=sa.String(32), nullable=False)
    op.create_index("ix_task_definitions_version_key", "task_definitions", ["id", "version_key"], unique=False)
    _create_definition_fk()


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, version, version_key FROM task_definitions "
                                "ORDER BY id, version_key")).all()
    mapping: list[dict[str, str]] = []
    by_id: dict[str, list[str]] = {}
    for def_id, version, _ in rows:
        by_id.setdefault(def_id, []).append(version)
    for def_id, versions in by_id.items():
        plain = all(v.endswith(".0.0") for v in versions)
        for rank, version in enumerate(versions, start=1):
            mapping.append({"i": def_id, "old": version, "new": version.split(".")[0] if plain else str(rank)})
    _drop_definition_fk()
    op.drop_index("ix_task_definitions_version_key", table_name="task_definitions")
    op.drop_column("task_definitions", "version_key")
    changed = [m for m in mapping if m["old"] != m["new"]]
    if changed:  # "n.0.0" -> "n" (or a rank); both tables, so tasks keep pointing at their definition
        bind.execute(sa.text("UPDATE task_definitions SET version = :new WHERE id = :i AND version = :old"), changed)
        bind.execute(sa.text("UPDATE task_instances SET definition_version = :new "
                             "WHERE definition_id = :i AND definition_version = :old"), changed)
    op.alter_column("task_definitions", "version", type_=sa.Integer(), postgresql_using="version::integer")
    op.alter_column("task_instances", "definition_version", type_=sa.Integer(),
                    postgresql_using="definition_version::integer")
    _create_definition_fk()
