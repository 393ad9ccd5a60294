"""Alembic environment for Flask-Migrate: runs against the app's own engine and metadata."""

import logging
from contextlib import contextmanager
from logging.config import fileConfig

from alembic import context
from flask import current_app

config = context.config
# Keep the app's loggers alive: fileConfig disables existing loggers unless told otherwise.
fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

target_db = current_app.extensions["migrate"].db
config.set_main_option("sqlalchemy.url", target_db.engine.url.render_as_string(hide_password=False).replace("%", "%%"))


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``flask db upgrade --sql``)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=target_db.metadata, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    def skip_empty_autogenerate(context, revision, directives):
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")

    configure_args = dict(current_app.extensions["migrate"].configure_args)
    configure_args.setdefault("process_revision_directives", skip_empty_autogenerate)
    with target_db.engine.connect() as connection, _sqlite_foreign_keys_off(connection):
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # One transaction for the whole run (SQLite's DDL is transactional; database.py begins
            # every transaction IMMEDIATE), so a failed check below undoes every step, not the last.
            configure_args.setdefault("transactional_ddl", True)
        context.configure(connection=connection, target_metadata=target_db.metadata, **configure_args)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise RuntimeError(f"foreign key violations after migrating: {problems[:10]}")


@contextmanager
def _sqlite_foreign_keys_off(connection):
    """SQLite's table-rebuild procedure (sqlite.org/lang_altertable.html, "12 steps"): enforcement off
    while batch migrations copy, drop and rename tables (a full foreign_key_check ends the run, inside
    its transaction), then back on.

    Without it, dropping the old copy of a parent table (``analysis``) would run its ON DELETE
    CASCADE and empty the child tables. The PRAGMA only works outside a transaction, so it goes to
    the driver connection before Alembic begins one.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
