"""Management commands (``python manage.py --help``)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from . import audit
from .extensions import db
from .models import ROLES, ApiToken, User

MIN_PASSWORD_LENGTH = 8


@click.command("init-db")
@click.option("--instance-path", type=click.Path(file_okay=False), default=None, help="Defaults to ./instance.")
def init_db_command(instance_path: str | None) -> None:
    """Create or upgrade the database schema; safe to run again.

    Also creates instance/ and a random instance/secret_key on first run. It builds its own app
    because the app refuses to start without a secret key, which this command is what provides.
    """
    from flask_migrate import upgrade

    from . import DEFAULT_INSTANCE_PATH, create_app
    from .config import SECRET_KEY_FILE

    instance = Path(instance_path or os.environ.get("PRISM_INSTANCE_PATH") or DEFAULT_INSTANCE_PATH)
    instance.mkdir(parents=True, exist_ok=True)
    key_file = instance / SECRET_KEY_FILE
    try:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32))
        click.echo(f"Wrote a new secret key to {key_file}")
    app = create_app(instance_path=str(instance))
    with app.app_context():
        Path(app.config["UPLOAD_FOLDER"]).mkdir(parents=True, exist_ok=True)
        upgrade(directory=app.extensions["migrate"].directory)
        click.echo(f"Database ready: {db.engine.url.render_as_string(hide_password=True)}")


def _user_or_exit(username: str) -> User:
    user = db.session.scalar(User.by_username(username))
    if user is None:
        raise click.ClickException(f"No user named {username!r}.")
    return user


@click.command("create-admin")
@click.option("--username", required=True)
@click.option("--password", help="Prompted for (hidden, twice) when omitted.")
@with_appcontext
def create_admin_command(username: str, password: str | None) -> None:
    """Create an admin account. There are no default accounts."""
    if db.session.scalar(User.by_username(username)) is not None:
        raise click.ClickException(f"{username!r} exists; use `set-role --username {username} --role admin`.")
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.ClickException(f"The password needs at least {MIN_PASSWORD_LENGTH} characters.")
    user = User(username=username, role="admin")
    user.set_password(password, current_app.config["PRISM_PASSWORD_HASH_METHOD"])
    db.session.add(user)
    db.session.flush()
    audit.record(audit.REGISTER, actor=user, target=user, details={"via": "cli", "role": "admin"})
    db.session.commit()
    click.echo(f"Admin {username!r} created.")


@click.command("set-role")
@click.option("--username", required=True)
@click.option("--role", required=True, type=click.Choice(ROLES))
@with_appcontext
def set_role_command(username: str, role: str) -> None:
    """Grant a role to an existing user."""
    user = _user_or_exit(username)
    previous, user.role = user.role, role
    audit.record(
        audit.ROLE_CHANGED,
        actor=None,
        target=user,
        details={"from": previous, "to": role, "via": "cli", "username": username},
    )
    db.session.commit()
    click.echo(f"{username}: {previous} -> {role}")


@click.command("create-token")
@click.option("--username", required=True)
@click.option("--name", default="cli", show_default=True, help="A label to recognise the token by.")
@with_appcontext
def create_token_command(username: str, name: str) -> None:
    """Create a personal API token and print it once (only its hash is stored)."""
    user = _user_or_exit(username)
    token, secret = ApiToken.issue(user, name)
    db.session.add(token)
    db.session.flush()
    audit.record(audit.TOKEN_CREATED, actor=user, target=token, details={"name": name, "via": "cli"})
    db.session.commit()
    click.echo(secret)


def register(app: Flask) -> None:
    from .inference.cli import models_cli

    for command in (create_admin_command, set_role_command, create_token_command, models_cli):
        app.cli.add_command(command)
