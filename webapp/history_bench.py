"""`manage.py bench --only history`: the history pages timed against a database of 100,000 analyses.

It builds a throwaway app on a temporary SQLite file, or on a given (empty, throwaway) PostgreSQL
database (`--only scaleout` runs both side by side), with fake models; the real instance is never touched. It
migrates it, bulk-inserts the rows (finished analyses, their caption and sentiment predictions, and the
reviews of about one prediction in ten), signs in through the real login view and times each page with the
Flask test client. The numbers therefore include routing, the queries, pagination's COUNT(*) and
template rendering, everything but the network. Every statement a page runs is also put through
EXPLAIN (QUERY PLAN on SQLite), so a slow page can be traced to the scan behind it.

This module must not import torch: it runs in the web tier's environment.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, event, text

from .models import DECISIONS, SENTIMENT_LABELS

TARGET_P95_MS = 50.0
PAGE_SIZE = 20
_PASSWORD = "bench-password"  # noqa: S105 (a throwaway account in a temporary database)
_OWNER_SHARE = 0.8  # the signed-in user owns most rows: the worst case for their own history page
_OTHER_USERS = 3
_DAYS = 400
_WORDS = (
    "thanks the service was quick and friendly but my refund still has not arrived after two weeks "
    "the x-ray shows a small shadow near the left lung please compare with last year's image "
    "students liked the diagram of the water cycle although the labels were hard to read "
    "delivery late again package damaged box open support never answered my emails "
    "great product works exactly as described would buy again and recommend to friends"
).split()
_CAPTION_WORDS = "a an the cat dog person street car x-ray chest hand diagram table chart sitting on with of".split()
_SEARCH_WORD = "refund"  # in about one text in twelve: a realistic search that matches something
_TABLES = {"analysis", "prediction", "review"}  # the statements whose plans are kept
_REVIEWED_SHARE = 0.1  # of predictions, reviewed by their owner: most results are never looked at twice


def scratch_app(instance: Path, **config: Any):
    """A throwaway app on a temporary database in ``instance``, migrated; the real instance is never touched."""
    from flask_migrate import upgrade

    from . import create_app

    app = create_app(
        {
            "SECRET_KEY": "bench",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'bench.sqlite'}",
            "PRISM_RATELIMIT_ENABLED": False,  # benches measure the work, not the limits on it
            "UPLOAD_FOLDER": str(instance / "uploads"),
            "PRISM_MODEL_DIR": str(instance / "models"),
            "PRISM_JOBS_DB": str(instance / "jobs.sqlite"),
            "PRISM_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
            **config,
        },
        instance_path=str(instance),
    )
    with app.app_context():
        upgrade(directory=app.extensions["migrate"].directory)
    return app


def run(
    rows: int = 100_000,
    repetitions: int = 30,
    echo: Callable[[str], None] = print,
    seed: int = 0,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Seed ``rows`` analyses, time every history and review-queue view ``repetitions`` times, return the
    results. ``database_url`` names an empty throwaway database to use instead of a temporary SQLite file."""
    from .extensions import db

    with tempfile.TemporaryDirectory(prefix="prism-history-bench-") as tmp:
        app = scratch_app(
            Path(tmp),
            PRISM_MODEL_BACKEND="fake",
            PRISM_PAGE_SIZE=PAGE_SIZE,
            WTF_CSRF_ENABLED=False,  # the bench signs in with a plain POST; CSRF is not what it measures
            **({"SQLALCHEMY_DATABASE_URI": database_url} if database_url else {}),
        )
        try:
            with app.app_context():
                dialect = db.engine.dialect.name
                started = time.perf_counter()
                token = _seed(rows, random.Random(seed))  # noqa: S311 - sample data, not secrets
                db.session.commit()
                # What a long-running database has: statistics, and on PostgreSQL the visibility map that
                # autovacuum keeps and index-only scans need (VACUUM may not run inside a transaction).
                if dialect == "postgresql":
                    with db.engine.connect() as connection:
                        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
                else:
                    db.session.execute(text("ANALYZE"))
                    db.session.commit()
                seed_seconds = time.perf_counter() - started
                echo(f"history ({dialect}): seeded {rows:,} analyses in {seed_seconds:.1f} s")
                cases = _cases(rows)
                engine = db.engine
            owner, admin = app.test_client(), app.test_client()
            _login(owner, "bench-owner")
            _login(admin, "bench-admin")
            clients = {"owner": owner, "admin": admin, "api": app.test_client()}
            api_headers = {"Authorization": f"Bearer {token}"}
            results = []
            for name, who, url in cases:
                client = clients[who]
                headers = api_headers if who == "api" else None
                # No app context around requests: the test client pushes its own, so each request's
                # session (and its BEGIN IMMEDIATE transaction) ends with the request.
                with _captured_statements(engine) as statements:
                    _get(client, url, headers)  # warm-up, and the statements to explain
                plans = _explain(engine, statements)
                queries = len(statements)
                timings = [_timed_get(client, url, headers) for _ in range(repetitions)]
                p50, p95 = _percentiles(timings)
                results.append(
                    {
                        "name": name,
                        "url": url,
                        "p50_ms": round(p50, 2),
                        "p95_ms": round(p95, 2),
                        "max_ms": round(max(timings), 2),
                        "passed": p95 < TARGET_P95_MS,
                        "queries": queries,
                        "reads": _reads(plans, dialect),
                        "plans": plans,
                    }
                )
        finally:
            with app.app_context():
                db.engine.dispose()
    return {
        "database": dialect,
        "rows": rows,
        "owner_rows": _owner_rows(rows),
        "users": 2 + _OTHER_USERS,
        "page_size": PAGE_SIZE,
        "repetitions": repetitions,
        "target_p95_ms": TARGET_P95_MS,
        "seed_seconds": round(seed_seconds, 2),
        "cases": results,
        "passed": all(case["passed"] for case in results),
    }


def format_table(result: dict[str, Any]) -> str:
    """The result as a fixed-width table, one line per page, with PASS/MISS against the target."""
    lines = [
        f"History pages on {result['database']}: {result['rows']:,} analyses ({result['owner_rows']:,} owned by "
        f"the signed-in user), {result['repetitions']} requests each, target p95 < {result['target_p95_ms']:g} ms",
        f"{'page':<30} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  result  {'SQL':>4}  COUNT(*) reads (EXPLAIN)",
    ]
    for case in result["cases"]:
        verdict = "PASS" if case["passed"] else "MISS"
        lines.append(
            f"{case['name']:<30} {case['p50_ms']:>8.1f} {case['p95_ms']:>8.1f} {case['max_ms']:>8.1f}  "
            f"{verdict:<6}  {case['queries']:>4}  {case['reads']}"
        )
    lines += [
        "SQL: statements one request runs (a page of 20 that runs 20 more loads each row's predictions lazily).",
        "Text search is LIKE '%word%', which no B-tree index can serve: the page reads rows until it has 20 "
        "matches, and its count stops at 1,000 matches (pagination.COUNT_CAP); full-text search (SQLite "
        "FTS5, PostgreSQL pg_trgm) is the fix if a rare word's full scan gets too slow.",
        "Filters on predictions (sentiment, review, confidence): a page checks each analysis with EXISTS and "
        "stops after 20 matches; its count reads a covering prediction index once (IN), except for "
        "'unreviewed', which most predictions are, where checking each analysis is cheaper.",
    ]
    return "\n".join(lines)


def _owner_rows(rows: int) -> int:
    return int(rows * _OWNER_SHARE)


def _seed(rows: int, rng: random.Random) -> str:
    """Insert the users, an API token, ``rows`` finished analyses, their predictions and some reviews.

    Rows go in with raw bulk inserts and explicit ids (the database is new, so ids start at 1), so a
    prediction names its analysis and a review its prediction without reading anything back.
    Returns the owner's API token.
    """
    from .extensions import db
    from .models import Analysis, ApiToken, Prediction, Review, User, utcnow

    users = [User(username="bench-owner"), User(username="bench-admin", role="admin")]
    users += [User(username=f"bench-user{index}") for index in range(_OTHER_USERS)]
    for user in users:
        user.set_password(_PASSWORD, "pbkdf2:sha256:1000")
    db.session.add_all(users)
    db.session.flush()
    token, secret = ApiToken.issue(users[0], "bench")
    db.session.add(token)
    names = {user.id: user.username for user in users}
    others = [user.id for user in users[2:]]
    owner_rows = _owner_rows(rows)
    # Oldest first, as an app that has run for a while inserts them: ids and timestamps rise together.
    start = utcnow() - timedelta(days=_DAYS)
    step = timedelta(days=_DAYS) / max(rows, 1)
    owners = [users[0].id] * owner_rows + [rng.choice(others) for _ in range(rows - owner_rows)]
    rng.shuffle(owners)
    tables = (Analysis.__table__, Prediction.__table__, Review.__table__)
    chunks: tuple[list[dict[str, Any]], ...] = ([], [], [])
    for index, user_id in enumerate(owners):
        analysis, predictions, reviews = _analysis_rows(
            rng, index + 1, user_id, names[user_id], start + step * index, first_prediction=len(chunks[1]) + 1
        )
        chunks[0].append(analysis)
        chunks[1].extend(predictions)
        chunks[2].extend(reviews)
    connection = db.session.connection()  # the users' transaction: one commit for everything
    for table, chunk in zip(tables, chunks, strict=True):  # parents first: foreign keys are on
        _bulk_insert(connection, table, chunk)
    if connection.dialect.name == "postgresql":  # explicit ids leave the sequences behind; move them on
        for table in tables:
            connection.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608 (our table names)
                f"(SELECT coalesce(max(id), 1) FROM {table.name}))"
            )
    db.session.commit()
    return secret


def _bulk_insert(connection, table, rows: list[dict[str, Any]]) -> None:
    """A raw ``executemany`` of ``rows`` (dicts with the same keys) into ``table``.

    Values are stored as SQLAlchemy stores them on SQLite (JSON columns as JSON text, None included;
    datetimes as "YYYY-MM-DD HH:MM:SS.ffffff"), without its per-value bind processing, which would
    take longer than SQLite's own work here. PostgreSQL reads the same text into its json and
    timestamp columns.
    """
    if not rows:
        return
    columns = [table.c[name] for name in rows[0]]  # KeyError for a column the table lacks
    convert = [_converter(column.type) for column in columns]
    names = ", ".join(f'"{column.name}"' for column in columns)
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    statement = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join([marker] * len(columns))})'  # noqa: S608
    keys = [column.name for column in columns]
    connection.exec_driver_sql(
        statement, [tuple(to_db(row[key]) for key, to_db in zip(keys, convert, strict=True)) for row in rows]
    )


def _converter(column_type) -> Callable[[Any], Any]:
    if isinstance(column_type, JSON):
        return json.dumps
    if isinstance(column_type, DateTime):
        return lambda value: None if value is None else value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return lambda value: value


def _analysis_rows(
    rng: random.Random, analysis_id: int, user_id: int, username: str, created_at, *, first_prediction: int
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One plausible finished analysis: text, image or both, with a sentiment prediction for texts and
    a caption for images, some of them reviewed by their owner. Returns (analysis, predictions, reviews)."""
    kind = rng.random()
    has_text, has_image = kind < 0.8, kind > 0.5
    finished_at = created_at + timedelta(seconds=rng.uniform(0.5, 5))
    analysis: dict[str, Any] = {
        "id": analysis_id,
        "user_id": user_id,
        "scenario": rng.choice(("service", "medical", "education")),
        "created_at": created_at,
        "app_version": "bench",
        "text": None,
        "image_sha256": None,
        "image_format": None,
        "image_width": None,
        "image_height": None,
        "image_filename": None,
        # About one job in a hundred failed (after some of its results, as a job can), for ?status=failed.
        "status": "failed" if analysis_id % 97 == 0 else "done",
        "tasks": [],
        "attempts": 1,
        "queued_at": created_at,
        "started_at": created_at,
        "finished_at": finished_at,
    }
    predictions: list[dict[str, Any]] = []
    if has_image:
        analysis.update(
            image_sha256=f"{rng.getrandbits(256):064x}",
            image_format="png",
            image_width=rng.choice((640, 800, 1024)),
            image_height=rng.choice((480, 600, 768)),
            image_filename=f"upload-{rng.randint(1, 10**6)}.png",
        )
        analysis["tasks"].append("caption")
        caption = " ".join(rng.choices(_CAPTION_WORDS, k=rng.randint(5, 14)))
        predictions.append(
            {
                "kind": "caption",
                "model_id": "bench/caption",
                "latency_ms": round(rng.uniform(100, 900), 1),
                "output": {"text": caption},
                "confidence": None,
                "margin": None,
            }
        )
    if has_text:
        analysis["text"] = " ".join(rng.choices(_WORDS, k=rng.randint(4, 60)))
        analysis["tasks"].append("sentiment")
        label = rng.choices(SENTIMENT_LABELS, weights=(3, 2, 5))[0]
        # The top class, a runner-up between an even split of the rest and a near tie, and the remainder:
        # every band appears, and so do uncertain results (weak top class or a small margin).
        score = round(rng.uniform(0.36, 0.99), 4)
        second = round(rng.uniform((1 - score) / 2, min(score, 1 - score)), 4)
        third = round(1 - score - second, 4)
        runner_up, last = rng.sample([name for name in SENTIMENT_LABELS if name != label], 2)
        scores = {label: score, runner_up: second, last: third}
        scores = {name: scores[name] for name in SENTIMENT_LABELS}
        predictions.append(
            {
                "kind": "sentiment",
                "model_id": "bench/sentiment",
                "latency_ms": round(rng.uniform(5, 80), 1),
                "output": {"label": label, "scores": scores, "raw_scores": scores},
                "confidence": score,
                "margin": round(score - second, 4),
            }
        )
    reviews: list[dict[str, Any]] = []
    # The search text as Analysis.refresh_search_text builds it: text, file name, AI and human captions.
    terms = [analysis.get("text"), analysis.get("image_filename")]
    for offset, prediction in enumerate(predictions):
        prediction.update(
            id=first_prediction + offset,
            analysis_id=analysis_id,
            user_id=user_id,
            scenario=analysis["scenario"],
            created_at=finished_at,
            revision="0" * 40,
            precision="fp32",
            review_state="unreviewed",
            final_label=prediction["output"].get("label"),
        )
        review = _review_row(rng, prediction, user_id, username)
        if review is not None:
            reviews.append(review)
        if prediction["kind"] == "caption":
            terms += [prediction["output"]["text"], review["value"] if review else None]
    analysis["search_text"] = "\n".join(term for term in terms if term)
    return analysis, predictions, reviews


def _review_row(rng: random.Random, prediction: dict[str, Any], user_id: int, username: str) -> dict[str, Any] | None:
    """About one prediction in ten reviewed by its owner (6% accepted, 2.5% corrected, 1.5% rejected); sets
    the prediction's cached ``review_state`` / ``final_label`` as ``Prediction.apply`` would."""
    draw = rng.random()
    if draw >= _REVIEWED_SHARE:
        return None
    decision = "accept" if draw < 0.06 else "correct" if draw < 0.085 else "reject"
    value = None
    if decision == "correct":
        if prediction["kind"] == "sentiment":
            value = rng.choice([name for name in SENTIMENT_LABELS if name != prediction["output"]["label"]])
        else:
            value = " ".join(rng.choices(_CAPTION_WORDS, k=rng.randint(5, 14)))
    state = DECISIONS[decision]
    prediction["review_state"] = state
    if prediction["kind"] == "sentiment":
        accepted = prediction["output"]["label"]
        prediction["final_label"] = {"accepted": accepted, "corrected": value, "rejected": None}[state]
    return {
        "prediction_id": prediction["id"],
        "reviewer_id": user_id,
        "reviewer_name": username,
        "decision": decision,
        "value": value,
        "comment": None,
        "created_at": prediction["created_at"] + timedelta(hours=rng.uniform(0.1, 48)),
    }


def _cases(rows: int) -> list[tuple[str, str, str]]:
    """(name, who, url) for every page timed: who is "owner", "admin" or "api"."""
    from .extensions import db
    from .models import Analysis

    newest = db.session.scalar(db.select(db.func.max(Analysis.created_at)))
    month_to = (newest - timedelta(days=_DAYS // 2)).date() if newest else None
    month_from = month_to - timedelta(days=30) if month_to else None
    deep = max(1, _owner_rows(rows) // PAGE_SIZE // 2)
    return [
        ("history: page 1", "owner", "/history/"),
        (f"history: page {deep}", "owner", f"/history/?page={deep}"),
        ("history: scenario", "owner", "/history/?scenario=medical"),
        ("history: sentiment", "owner", "/history/?sentiment=negative"),
        ("history: scenario+sentiment", "owner", "/history/?scenario=education&sentiment=neutral"),
        ("history: review unreviewed", "owner", "/history/?review=unreviewed"),
        ("history: review corrected", "owner", "/history/?review=corrected"),
        ("history: confidence uncertain", "owner", "/history/?confidence=uncertain"),
        ("history: text search", "owner", f"/history/?q={_SEARCH_WORD}"),
        ("history: 30-day range", "owner", f"/history/?from={month_from}&to={month_to}"),
        ("history: status failed", "owner", "/history/?status=failed"),
        ("review queue: service", "owner", "/review/service/"),
        ("admin: all analyses", "admin", "/admin/analyses"),
        ("admin: owner filter", "admin", "/admin/analyses?owner=bench-user1"),
        ("admin: sentiment", "admin", "/admin/analyses?sentiment=negative"),
        ("api: analyses", "api", "/api/v1/analyses"),
        ("api: analyses page 2", "api", "/api/v1/analyses?page=2&per_page=100"),
    ]


def _login(client, username: str) -> None:
    response = client.post("/login", data={"username": username, "password": _PASSWORD})
    if response.status_code != 302:
        raise RuntimeError(f"history bench: could not sign in as {username} ({response.status_code})")


def _get(client, url: str, headers: dict[str, str] | None):
    response = client.get(url, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"history bench: GET {url} answered {response.status_code}")
    return response


def _timed_get(client, url: str, headers: dict[str, str] | None) -> float:
    started = time.perf_counter()
    _get(client, url, headers)
    return (time.perf_counter() - started) * 1000.0


def _percentiles(timings: list[float]) -> tuple[float, float]:
    if len(timings) < 2:
        return timings[0], timings[0]
    cuts = statistics.quantiles(timings, n=100, method="inclusive")
    return cuts[49], cuts[94]


@contextmanager
def _captured_statements(engine) -> Iterator[list[tuple[str, Any]]]:
    """Collect every SELECT that runs inside the block, with its parameters."""
    statements: list[tuple[str, Any]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def _explain(engine, statements: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """The plan of each distinct statement on analyses, predictions or reviews, in the order they first ran."""
    plans, seen = [], set()
    explain = "EXPLAIN QUERY PLAN" if engine.dialect.name == "sqlite" else "EXPLAIN"
    with engine.connect() as connection:
        for statement, parameters in statements:
            sql = " ".join(statement.split())
            if sql in seen or not _TABLES.intersection(re.findall(r"\b(?:FROM|JOIN) \"?(\w+)", sql)):
                continue
            seen.add(sql)
            rows = connection.exec_driver_sql(f"{explain} {statement}", parameters).all()
            plans.append({"sql": sql, "plan": [row[-1] for row in rows]})
    return plans


_PG_SCAN = re.compile(r"(Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan)(?: using (\S+))? on (\w+)")


def _reads_postgresql(plans: list[dict[str, Any]]) -> str:
    """What the COUNT(*) statement reads on PostgreSQL: each scan node of its plan, in plan order."""
    counts = [plan for plan in plans if "count(" in plan["sql"].lower()] or plans[:1]
    scans = []
    for line in (line for plan in counts for line in plan["plan"]):
        if found := _PG_SCAN.search(line):
            kind, index, table = found.groups()
            scans.append(f"{kind.lower()} of {table}" + (f" ({index})" if index else ""))
    return "; ".join(dict.fromkeys(scans)) or "-"


def _reads(plans: list[dict[str, Any]], dialect: str = "sqlite") -> str:
    """What pagination's COUNT(*) reads, the statement that visits every matching row, per table it
    touches: the whole table, index entries plus one table row each, or index entries only (a covering
    index); and whether the page itself is sorted in a temporary B-tree rather than read in index order."""
    if dialect == "postgresql":
        return _reads_postgresql(plans)
    counts = [plan for plan in plans if "count(" in plan["sql"].lower()] or plans[:1]
    lines = [line for plan in counts for line in plan["plan"]]
    described = []
    for table in ("analysis", "prediction"):
        steps = [line for line in lines if line.startswith(("SCAN ", "SEARCH ")) and line.split()[1] == table]
        if not steps:
            continue
        if any(line.startswith("SCAN ") and "INDEX" not in line for line in steps):
            return f"table scan of {table}"
        prefix = "" if table == "analysis" else f"{table} per row: "
        uncovered = [line for line in steps if "COVERING" not in line]
        if uncovered:
            index = uncovered[0].split(" USING ", 1)[-1].split("INDEX ", 1)[-1]
            described.append(prefix + "index + a row each: " + index)
        else:
            described.append(prefix + "index only: " + steps[0].split(" USING COVERING INDEX ", 1)[-1])
    pages = [plan for plan in plans if " LIMIT " in plan["sql"] and "count(" not in plan["sql"].lower()]
    if pages and "USE TEMP B-TREE FOR ORDER BY" in pages[0]["plan"]:
        described.append("page sorted in a temp B-tree")
    return "; ".join(described) or "-"


def target(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's history target as {name, measured, goal, passed}: the slowest page's p95."""
    worst = max(result["cases"], key=lambda case: case["p95_ms"])
    return {
        "name": f"history pages, {result['rows']:,} rows: slowest p95 ms ({worst['name']})",
        "measured": worst["p95_ms"],
        "goal": f"< {result['target_p95_ms']:g}",
        "passed": result["passed"],
    }
