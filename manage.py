"""Prism's command line: `python manage.py --help`. Thin on purpose; commands live in webapp/commands.py."""

import click
from flask.cli import FlaskGroup

from webapp import create_app
from webapp.commands import init_db_command, run_command


@click.group(cls=FlaskGroup, create_app=create_app)
def cli() -> None:
    """Manage Prism: init-db, create-admin, set-role, create-token, models, run, worker."""


cli.add_command(init_db_command)
cli.add_command(run_command)  # replaces Flask's own `run`: it also starts the job consumer

if __name__ == "__main__":
    cli()
