"""A live Prism server and a headless Chromium for browser tests (Playwright, sync API).

The server is the test app (``make_app``: SQLite in a temp folder, the fake model backend, jobs run in
the request) served by werkzeug's ``make_server`` on 127.0.0.1 at a free port, in a thread, once per
session. It holds one user per role (``ACCOUNTS``), a few finished records (ids 1-3, some in
Chinese), an API token of uma's and tina's assignment 1 with two uploaded photos, so the list
pages have rows. Tests skip, with the reason, where
Playwright or /usr/bin/chromium is missing.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import update
from werkzeug.serving import make_server

from tests.conftest import TEST_PASSWORD, add_analysis, login, make_app, make_token, make_user, png_bytes
from tests.test_education import create_assignment, create_rubric, rubric_ids, upload
from webapp.extensions import db
from webapp.models import User

CHROMIUM = "/usr/bin/chromium"
# username -> role: one account per role the pages need (each scenario admits only some roles).
ACCOUNTS = {"root": "admin", "uma": "user", "clara": "clinician", "tina": "teacher"}


@dataclass(frozen=True)
class LiveServer:
    url: str  # http://127.0.0.1:<port>, no trailing slash
    app: object

    def __call__(self, path: str) -> str:
        return self.url + path


@contextmanager
def serving(app, name: str) -> Iterator[LiveServer]:
    """Serve ``app`` on 127.0.0.1 at a free port from a daemon thread until the block ends."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.server_port}", app)
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """The app served over HTTP for the whole session; see the module docstring for what it holds."""
    # No rate limits: a browser suite signs in and submits faster than a person.
    # A 300 kB image limit lets the refusal tests drop an oversized file without pushing megabytes
    # through the page.
    app = make_app(tmp_path_factory.mktemp("live"), PRISM_RATELIMIT_ENABLED=False, PRISM_MAX_IMAGE_BYTES=300_000)
    ids = {name: make_user(app, name, role=role) for name, role in ACCOUNTS.items()}
    add_analysis(
        app,
        ids["uma"],
        text="My order arrived broken and nobody answers my emails.",
        sentiment="negative",
        caption="a cardboard box with a dent in one corner",
    )
    add_analysis(
        app,
        ids["uma"],
        text="订单到了但是坏了，客服一直不回复我的邮件，我非常失望，希望尽快处理退款事宜。",
        sentiment={"negative": 0.7, "neutral": 0.2, "positive": 0.1},
    )
    add_analysis(
        app,
        ids["clara"],
        scenario="medical",
        text="Follow-up image, less pain than last visit.",
        caption="a chest x-ray of an adult",
    )
    make_token(app, "uma", name="报表脚本 / grading script")
    # Tina's assignment 1 with two graded-by-AI photos (submissions 1 and 2, batch 1), made as she would.
    teacher = app.test_client()
    login(teacher, "tina")
    assert create_rubric(teacher, title="分数 Fractions").status_code == 302
    assert create_assignment(teacher, rubric_ids(app)[0], title="第三次作业 Homework 3").status_code == 302
    photos = [(png_bytes(color=(200, 10, 10)), "张伟.png"), (png_bytes(color=(10, 200, 10)), "Li Na.jpg")]
    assert upload(teacher, 1, photos).status_code == 302
    with serving(app, "live-server") as server:
        yield server


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium, launched once; skipped with the reason where it or Playwright is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (python) is not installed")
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def sign_in(page, live_server: LiveServer, username: str) -> None:
    """Sign ``page``'s context in through the login form, as a person would."""
    page.goto(live_server("/login"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", TEST_PASSWORD)
    page.click("main form[method=post] button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url, f"sign-in of {username} failed"


@pytest.fixture(scope="session")
def signed_in(browser, live_server):
    """``signed_in(username, **context_options)``: a new browser context with that account's session
    (signed in once per account per session, through the form)."""
    states: dict[str, dict] = {}

    def new_context(username: str | None = None, **options):
        if username and username not in states:
            context = browser.new_context()
            sign_in(context.new_page(), live_server, username)
            states[username] = context.storage_state()
            context.close()
        return browser.new_context(storage_state=states.get(username), **options)

    return new_context


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where tests save screenshots: $PRISM_SCREENSHOTS, else the test's tmp_path."""
    folder = Path(os.environ.get("PRISM_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def model_server(tmp_path_factory):
    """Prism as the Quickstart runs it, with tiny real models: transformers checkpoints that the tests
    build from configs (a ViT-GPT-2 captioner, a 3-class DistilBERT sentiment model, a MiniLM-shaped
    embedding model), saved into a temp folder and loaded through the app's own loader, with the hub
    switched off; the packaged OCR; jobs on the SQLite queue, run by a consumer inside the server
    process, so pages see records go pending → done and batches climb to 100% as in production.
    Everyone registers and signs in through the pages (no seeded accounts but an admin)."""
    from tests.inference.tiny_models import build_embedding, build_sentiment, build_vit_gpt2
    from webapp.jobs import create_consumer

    models = tmp_path_factory.mktemp("tiny-models")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app = make_app(
        tmp_path_factory.mktemp("model-server"),
        PRISM_RATELIMIT_ENABLED=False,
        PRISM_JOBS_IMMEDIATE=False,
        PRISM_MODEL_BACKEND="transformers",
        PRISM_CAPTION_MODEL=str(build_vit_gpt2(models / "vit-gpt2")),
        PRISM_SENTIMENT_MODEL=str(build_sentiment(models / "sentiment", ["negative", "neutral", "positive"])),
        PRISM_EMBEDDING_MODEL=str(build_embedding(models / "embedding")),
        PRISM_MODEL_OFFLINE=True,
        PRISM_CAPTION_NUM_BEAMS=2,
        PRISM_CAPTION_MAX_NEW_TOKENS=6,
        PRISM_MODEL_LOAD_WAIT=120,
    )
    make_user(app, "root", role="admin")
    consumer = create_consumer(app, in_process=True)
    consumer.start()
    try:
        with serving(app, "model-server") as server:
            yield server
    finally:
        consumer.stop(graceful=False)


@pytest.fixture(autouse=True)
def _accounts_back_in_english(request):
    """Prism remembers each account's language, so a test that switches the shared live server's
    accounts to Chinese would leave the next test reading Chinese pages: after each test that used
    the live server, its accounts' saved language is cleared (English, the default, again)."""
    yield
    if "live_server" not in request.fixturenames:
        return
    app = request.getfixturevalue("live_server").app
    with app.app_context():
        db.session.execute(update(User).values(language=None))
        db.session.commit()
