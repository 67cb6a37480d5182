"""Database engine, sessions and migrations, for SQLite (embedded) and PostgreSQL.

`open_database(settings)` returns a `Database`: an async engine and a session factory.
On the embedded SQLite default, migrations are applied automatically; against PostgreSQL,
`ingestion db upgrade` applies them (every command still checks the schema is current).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import column, create_engine, event, inspect, select, table
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ingestion.config import Settings
from ingestion.errors import ConfigurationError

if TYPE_CHECKING:  # Alembic is imported only when there is migration work (start-up time)
    from alembic.config import Config

__all__ = ["HEAD_REVISION", "VERSION_TABLE", "Database", "open_database", "sync_url", "upgrade"]

#: Our own Alembic version table, so a product database that uses Alembic is not disturbed.
VERSION_TABLE = "ingestion_alembic_version"
_MIGRATIONS = Path(__file__).with_name("migrations")
#: The newest migration (tests/test_storage.py pins it to Alembic's head). A database
#: already there is checked with one plain read: Alembic, about a fifth of a command's start-up,
#: is imported only when there is something to migrate or to explain.
HEAD_REVISION = "000c"


def sync_url(settings: Settings) -> str:
    """The same database through a synchronous driver (Alembic runs synchronously)."""
    return settings.sqlalchemy_url.replace("sqlite+aiosqlite", "sqlite")


def _alembic_config(settings: Settings) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sync_url(settings).replace("%", "%%"))
    config.attributes["version_table"] = VERSION_TABLE
    return config


def _prepare_sqlite_folder(settings: Settings) -> None:
    path = settings.sqlite_path
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # The busy timeout first: `journal_mode` takes a lock, and without a timeout a connection
    # opened while another process writes failed at once with "database is locked".
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL cannot corrupt the database; a power cut may lose the last commits, which
    # only means a resend (cursors move after acceptance, record ids are stable).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to `revision` (synchronous; call from a thread in async code)."""
    from alembic import command

    _prepare_sqlite_folder(settings)
    command.upgrade(_alembic_config(settings), revision)


def current_revision(settings: Settings) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(sync_url(settings), hide_parameters=True)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    finally:
        engine.dispose()


def head_revision(settings: Settings) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config(settings)).get_current_head()


def _at_head(settings: Settings) -> bool:
    """Whether our version table holds exactly `HEAD_REVISION` (one read, no Alembic)."""
    if settings.sqlite_path is not None and not settings.sqlite_path.exists():
        return False
    engine = create_engine(sync_url(settings), hide_parameters=True)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(VERSION_TABLE):
                return False
            version = table(VERSION_TABLE, column("version_num"))
            rows = conn.execute(select(version.c.version_num)).all()
            return [row[0] for row in rows] == [HEAD_REVISION]
    finally:
        engine.dispose()


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    kind: str

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, committed on success and rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection in autocommit mode for one-statement reads on hot paths (no BEGIN and
        COMMIT round trips); nothing read through it is ever written back."""
        async with self.engine.connect() as connection:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")

    async def dispose(self) -> None:
        await self.engine.dispose()


async def open_database(settings: Settings, *, migrate: bool | None = None) -> Database:
    """Connect; apply migrations when `migrate` (default: only on SQLite).

    Raises `ConfigurationError` when the schema is behind and was not migrated.
    """
    _prepare_sqlite_folder(settings)
    if migrate is None:
        migrate = settings.is_sqlite
    if not await asyncio.to_thread(_at_head, settings):
        if migrate:
            await asyncio.to_thread(upgrade, settings)
        else:
            current, head = await asyncio.to_thread(
                lambda: (current_revision(settings), head_revision(settings))
            )
            if current != head:
                raise ConfigurationError(
                    f"database schema is at {current or 'nothing'}, expected {head}: "
                    "run `ingestion db upgrade`"
                )
    # Statement errors never carry bound values (tokens, record text) into messages or logs.
    kwargs: dict[str, Any] = {"hide_parameters": True}
    if not settings.is_sqlite:
        kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
    engine = create_async_engine(settings.sqlalchemy_url, **kwargs)
    if settings.is_sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    return Database(engine=engine, sessions=sessions, kind=settings.database_kind)
