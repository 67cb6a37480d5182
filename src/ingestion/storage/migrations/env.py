"""Alembic environment: runs our migrations on the configured database (synchronously)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ingestion.storage.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url, hide_parameters=True)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=config.attributes.get("version_table", "ingestion_alembic_version"),
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
