"""Migrations: all of them applied to an empty database give the schema snapshot."""

from __future__ import annotations

import multiprocessing
import re
import sqlite3
from pathlib import Path

from conveyor.storage.factory import open_storage
from conveyor.storage.sql import load_migrations

SNAPSHOT = Path(__file__).with_name("schema_sqlite.sql")


def dump_schema(path: str) -> str:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
        "ORDER BY type DESC, name"
    ).fetchall()
    conn.close()
    return "".join(_normalize(sql) + ";\n" for _, _, sql in rows)


def _normalize(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def test_migrations_from_empty_give_the_snapshot(tmp_path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    applied = storage.migrate()
    storage.close()
    assert applied == [v for v, _, _ in load_migrations("conveyor.storage.sqlite")]
    schema = dump_schema(f"{tmp_path}/s.db")
    if not SNAPSHOT.exists():  # first run writes it; review and commit the file
        SNAPSHOT.write_text(schema)
    assert schema == SNAPSHOT.read_text(), "schema drifted from tests/storage/schema_sqlite.sql"


def test_migrate_is_idempotent(tmp_path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    assert storage.migrate()
    assert storage.migrate() == []
    storage.close()


def test_migration_versions_are_dense_and_numbered() -> None:
    versions = [v for v, _, _ in load_migrations("conveyor.storage.sqlite")]
    assert versions == list(range(1, len(versions) + 1))


def _migrate(url: str, barrier: multiprocessing.synchronize.Barrier) -> None:  # type: ignore[name-defined]
    storage = open_storage(url)
    barrier.wait()
    storage.migrate()
    storage.close()


def test_concurrent_migrate_from_several_processes(backend_url: str) -> None:
    """Four processes migrate one empty database at the same moment; all migrations end up applied once."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_migrate, args=(backend_url, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    storage = open_storage(backend_url)
    try:
        assert storage.migrate() == []  # every version is recorded as applied
        storage.functions_sync([])  # and the schema is usable
    finally:
        storage.close()


def test_sqlite_is_wal_and_synchronous_full(tmp_path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    storage.migrate()
    conn = storage._conn()  # type: ignore[attr-defined]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    storage.close()


# ---- PostgreSQL ----------------------------------------------------------------------------

PG_SNAPSHOT = Path(__file__).with_name("schema_postgres.txt")


def dump_pg_schema(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
        cols = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, '') "
            "FROM information_schema.columns WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            (schema,),
        ).fetchall()
        idx = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY indexname", (schema,)
        ).fetchall()
    lines = [f"column {t}.{c} {d} null={n} default={df}" for t, c, d, n, df in cols]
    lines += [f"index {name} {ddl.replace(schema + '.', '')}" for name, ddl in idx]
    return "\n".join(lines) + "\n"


def test_postgres_migrations_from_empty_give_the_snapshot() -> None:
    from tests.support.postgres import fresh_schema

    with fresh_schema() as url:
        storage = open_storage(url)
        applied = storage.migrate()
        storage.close()
        assert applied == [v for v, _, _ in load_migrations("conveyor.storage.postgres")]
        schema = dump_pg_schema(url)
    if not PG_SNAPSHOT.exists():  # first run writes it; review and commit the file
        PG_SNAPSHOT.write_text(schema)
    assert schema == PG_SNAPSHOT.read_text(), "schema drifted from tests/storage/schema_postgres.txt"
