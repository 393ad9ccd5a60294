"""Configuration: defaults in code, then ``instance/config.py``, then ``PRISM_*`` env vars, then test_config.

The defaults run the Quickstart on SQLite in ``instance/`` with no setup beyond ``manage.py init-db``,
which also writes a random ``instance/secret_key``. Without a secret key the app refuses to start
rather than sign sessions with a known value.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask

SECRET_KEY_FILE = "secret_key"  # noqa: S105 (a file name)


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def defaults(instance_path: str) -> dict[str, Any]:
    instance = Path(instance_path)
    hub_offline = _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")
    return {
        "SECRET_KEY": None,
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance / 'prism.sqlite'}",
        "UPLOAD_FOLDER": str(instance / "uploads"),
        # Whole-request cap (Werkzeug answers 413); a batch of phone photos needs room. Each image is
        # also capped by size and pixels in uploads.py.
        "MAX_CONTENT_LENGTH": 100 * 1024 * 1024,
        "PRISM_MAX_BATCH_FILES": 50,
        # Uploaded bytes (webapp/storage): UPLOAD_FOLDER unless PRISM_STORAGE_URL names an S3-compatible
        # bucket (s3://bucket/prefix); the PRISM_S3_* settings say where and how to reach it, and fall
        # back to boto3's own (AWS_* variables, ~/.aws, instance roles) when unset.
        "PRISM_STORAGE_URL": None,
        "PRISM_S3_ENDPOINT_URL": None,
        "PRISM_S3_REGION": None,
        "PRISM_S3_ACCESS_KEY_ID": None,
        "PRISM_S3_SECRET_ACCESS_KEY": None,
        # Which parts this process runs: "all" (the Quickstart: pages, and `manage.py run` also runs
        # jobs), "web" (pages only; never loads a model: jobs wait for `manage.py worker`), "worker".
        "PRISM_ROLE": "all",
        # Reverse proxies / load balancers in front of Prism whose X-Forwarded-* headers to trust (0: none,
        # the Quickstart). Behind one nginx, 1: then rate limits and audit rows see the client's address,
        # not the proxy's. Never more than there are: a client could forge the address otherwise.
        "PRISM_TRUSTED_PROXIES": 0,
        # Background jobs (webapp/jobs): SQLite queue in instance/ unless PRISM_REDIS_URL is set.
        "PRISM_REDIS_URL": None,
        "PRISM_JOBS_DB": str(instance / "jobs.sqlite"),
        "PRISM_JOBS_IMMEDIATE": False,
        "PRISM_WORKER_THREADS": 8,
        "PRISM_WORKER_MAX_POLL_MS": 250,
        "PRISM_INPROCESS_WORKER": True,
        "PRISM_JOB_LEASE_SECONDS": 120,
        "PRISM_JOB_MAX_ATTEMPTS": 3,
        # Each consumer re-queues stalled work this often, and says it is alive this often (webapp/jobs).
        "PRISM_JOB_SWEEP_SECONDS": 60.0,
        "PRISM_WORKER_HEARTBEAT_SECONDS": 10.0,
        # Rate limits ("N per minute" strings, see the `limits` library); counted in Redis when
        # PRISM_REDIS_URL is set (shared by every process and host), else in this process's memory.
        "PRISM_RATELIMIT_ENABLED": True,
        "PRISM_RATELIMIT_LOGIN": "10 per minute",
        # Failed logins per account, from every address together; a browser the account signed in
        # from before (its device cookie) is exempt, so an attacker cannot lock the owner out.
        "PRISM_RATELIMIT_LOGIN_ACCOUNT": "20 per hour",
        "PRISM_RATELIMIT_SUBMIT": "60 per minute",
        "PRISM_RATELIMIT_API": "600 per minute",
        # Audit rows of failures anyone can cause (bad logins, tokens, CSRF), per address and action.
        "PRISM_RATELIMIT_AUDIT_FAILURES": "10 per minute",
        # Review engine: confidence bands, and when a result counts as uncertain.
        "PRISM_CONFIDENCE_HIGH": 0.8,
        "PRISM_CONFIDENCE_MEDIUM": 0.6,
        "PRISM_UNCERTAIN_MIN_SCORE": 0.5,
        "PRISM_UNCERTAIN_MIN_MARGIN": 0.1,
        "PRISM_MAX_IMAGE_BYTES": 10 * 1024 * 1024,
        "PRISM_MAX_IMAGE_PIXELS": 40_000_000,
        # Uploads (webapp/uploads.py): the memory one decoded image may take, judged from its header
        # before decoding; how many images one process decodes at once; and the longest side of the
        # copy a job gives the models (captioners see 224-384 px, OCR about 2,000).
        "PRISM_MAX_DECODE_BYTES": 256 * 1024 * 1024,
        "PRISM_MAX_CONCURRENT_DECODES": 2,
        "PRISM_MODEL_IMAGE_MAX_SIDE": 2048,
        "PRISM_MAX_TEXT_CHARS": 5000,
        "PRISM_PAGE_SIZE": 20,
        # Passwords: PBKDF2-SHA256 at 1,000,000 iterations meets ASVS 5 / OWASP (>= 600,000) without
        # scrypt-2^17's 128 MiB per concurrent login. Tests lower it (see tests/conftest.py).
        "PRISM_PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000000",
        # Sessions and cookies: defaults of Flask (31 days) and Flask-Login (365-day remember cookie
        # with no SameSite) are too long-lived for clinical data.
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": False,
        "REMEMBER_COOKIE_DURATION": timedelta(days=14),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": False,
        "WTF_CSRF_TIME_LIMIT": 3600,
        # A session with no request for this long ends (webapp/auth); "Keep me signed in" then
        # brings the user back, but not fresh: exports, role changes and new tokens ask for the password.
        "PRISM_IDLE_MINUTES": 30,
        # 1: admins and clinicians must set up two-step sign-in (TOTP) before using Prism.
        "PRISM_REQUIRE_MFA": False,
        # Interface language (webapp/i18n.py); the catalogues ship with the code, not in instance/.
        "BABEL_DEFAULT_LOCALE": "en",
        "BABEL_TRANSLATION_DIRECTORIES": str(Path(__file__).resolve().parent / "translations"),
        # Model service (see webapp/inference/settings.py).
        "PRISM_MODEL_BACKEND": "transformers",
        "PRISM_CAPTION_MODEL": "nlpconnect/vit-gpt2-image-captioning",
        "PRISM_SENTIMENT_MODEL": "lxyuan/distilbert-base-multilingual-cased-sentiments-student",
        # OCR: "rapidocr" only (PP-OCRv4, Chinese + English; its weights ship in the wheel, nothing to pull).
        "PRISM_OCR_MODEL": "rapidocr",
        # Text embeddings for categories: any sentence-embedding checkpoint (hub id or directory).
        "PRISM_EMBEDDING_MODEL": "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
        "PRISM_MODEL_DIR": str(instance / "models"),
        "PRISM_MODEL_OFFLINE": hub_offline,
        # Refuse to download a model not pinned as org/name@<commit> (supply chain; see webapp/inference/hub.py).
        "PRISM_MODEL_REQUIRE_PINNED": False,
        "PRISM_CAPTION_NUM_BEAMS": 4,
        "PRISM_CAPTION_MAX_NEW_TOKENS": 24,
        # "auto": Prism's own forward passes where it implements the architecture (ViT-GPT2 captions:
        # inference/caption_decoding.py; DistilBERT sentiment: inference/text_classification.py), same
        # results, faster on the CPU; "off": transformers' generate() and forward everywhere.
        "PRISM_FAST_PATH": "auto",
        "PRISM_SENTIMENT_NEUTRAL_RANGE": "0.35,0.65",
        # Multimodal fusion (webapp/fusion.py): the weight of each part's sentiment in a record's overall
        # one; a part that is missing drops out and the others are renormalised.
        "PRISM_FUSION_WEIGHTS": "text=0.6,caption=0.2,ocr=0.2",
        # Image-text agreement: flagged below this cosine similarity of the text's and the image's
        # (caption + OCR) sentence embeddings. With the default multilingual MiniLM, paraphrases score
        # above ~0.5 and unrelated sentences around 0..0.15, while a caption ("a screenshot of a web page")
        # only loosely matches even a related complaint (~0.2..0.4): 0.15 flags the clearly unrelated
        # without flagging every loose match.
        "PRISM_AGREEMENT_THRESHOLD": 0.15,
        # Optional: a CLIP-style joint image-text model for agreement (hub id or directory of a CLIP or
        # Chinese-CLIP checkpoint, e.g. openai/clip-vit-base-patch32): it compares the image
        # itself with the text. Unset, the image's caption and OCR text are compared with the text by the
        # embedding model (webapp/fusion.py).
        "PRISM_AGREEMENT_MODEL": None,
        # Flag threshold for the joint model's cosine, on its own scale: CLIP ViT-B/32 gives matching
        # image-text pairs ~0.25..0.35 and unrelated ones ~0.1..0.2. PRISM_AGREEMENT_THRESHOLD stays for
        # the text method.
        "PRISM_AGREEMENT_MODEL_THRESHOLD": 0.2,
        "PRISM_TORCH_THREADS": 0,
        "PRISM_MODEL_LOAD_WAIT": 20,
        "PRISM_MODEL_RETRY_AFTER": 60,
        "PRISM_DEVICE": "auto",
        "PRISM_PRECISION": "auto",
        "PRISM_CAPTION_MAX_BATCH": 8,
        "PRISM_SENTIMENT_MAX_BATCH": 32,
        "PRISM_EMBEDDING_MAX_BATCH": 32,
        # Optional: an instruction-tuned model (hub id or directory, e.g. Qwen/Qwen2.5-0.5B-Instruct)
        # that writes service-desk reply drafts; unset, drafts come from the admins' templates.
        "PRISM_REPLY_MODEL": None,
        "PRISM_REPLY_MAX_NEW_TOKENS": 160,
        "PRISM_BATCH_WINDOW_MS": 0.0,
        "PRISM_BATCH_BUSY_WINDOW_MS": 200.0,
        "PRISM_QUEUE_SIZE": 32,
        "PRISM_INFERENCE_TIMEOUT": 30.0,
        "PRISM_FAKE_LATENCY_MS": 0.0,
    }


# Env vars whose values are not plain strings.
_INT_KEYS = {
    "MAX_CONTENT_LENGTH",
    "PRISM_MAX_IMAGE_BYTES",
    "PRISM_MAX_IMAGE_PIXELS",
    "PRISM_MAX_DECODE_BYTES",
    "PRISM_MAX_CONCURRENT_DECODES",
    "PRISM_MODEL_IMAGE_MAX_SIDE",
    "PRISM_MAX_TEXT_CHARS",
    "PRISM_IDLE_MINUTES",
    "PRISM_PAGE_SIZE",
    "PRISM_CAPTION_NUM_BEAMS",
    "PRISM_CAPTION_MAX_NEW_TOKENS",
    "PRISM_TORCH_THREADS",
    "PRISM_CAPTION_MAX_BATCH",
    "PRISM_SENTIMENT_MAX_BATCH",
    "PRISM_EMBEDDING_MAX_BATCH",
    "PRISM_REPLY_MAX_NEW_TOKENS",
    "PRISM_QUEUE_SIZE",
    "PRISM_MAX_BATCH_FILES",
    "PRISM_WORKER_THREADS",
    "PRISM_WORKER_MAX_POLL_MS",
    "PRISM_JOB_LEASE_SECONDS",
    "PRISM_JOB_MAX_ATTEMPTS",
    "PRISM_TRUSTED_PROXIES",
}
_FLOAT_KEYS = {
    "PRISM_MODEL_LOAD_WAIT",
    "PRISM_MODEL_RETRY_AFTER",
    "PRISM_BATCH_WINDOW_MS",
    "PRISM_BATCH_BUSY_WINDOW_MS",
    "PRISM_INFERENCE_TIMEOUT",
    "PRISM_FAKE_LATENCY_MS",
    "PRISM_JOB_SWEEP_SECONDS",
    "PRISM_WORKER_HEARTBEAT_SECONDS",
    "PRISM_CONFIDENCE_HIGH",
    "PRISM_CONFIDENCE_MEDIUM",
    "PRISM_UNCERTAIN_MIN_SCORE",
    "PRISM_UNCERTAIN_MIN_MARGIN",
    "PRISM_AGREEMENT_THRESHOLD",
    "PRISM_AGREEMENT_MODEL_THRESHOLD",
}
_BOOL_KEYS = {
    "PRISM_MODEL_OFFLINE",
    "PRISM_MODEL_REQUIRE_PINNED",
    "PRISM_REQUIRE_MFA",
    "PRISM_SECURE_COOKIES",
    "PRISM_JOBS_IMMEDIATE",
    "PRISM_INPROCESS_WORKER",
    "PRISM_RATELIMIT_ENABLED",
}
ROLES = ("all", "web", "worker")


def _from_environment() -> dict[str, Any]:
    """``PRISM_*`` variables; ``PRISM_SECRET_KEY``/``PRISM_DATABASE_URL`` map to Flask's names."""
    found: dict[str, Any] = {}
    for name, raw in os.environ.items():
        if not name.startswith("PRISM_"):
            continue
        if name in _INT_KEYS:
            found[name] = int(raw)
        elif name in _FLOAT_KEYS:
            found[name] = float(raw)
        elif name in _BOOL_KEYS:
            found[name] = _env_flag(name)
        else:
            found[name] = raw
    if "PRISM_SECRET_KEY" in found:
        found["SECRET_KEY"] = found.pop("PRISM_SECRET_KEY")
    if "PRISM_DATABASE_URL" in found:
        found["SQLALCHEMY_DATABASE_URI"] = found.pop("PRISM_DATABASE_URL")
    if "PRISM_MAX_REQUEST_BYTES" in found:
        found["MAX_CONTENT_LENGTH"] = int(found.pop("PRISM_MAX_REQUEST_BYTES"))
    if hosts := found.pop("PRISM_TRUSTED_HOSTS", ""):
        # Flask answers 400 to any other Host header, so that no absolute URL (the API's "url"
        # fields, redirects) is ever built from a Host header an attacker chose.
        found["TRUSTED_HOSTS"] = [host.strip() for host in hosts.split(",") if host.strip()]
    if found.pop("PRISM_SECURE_COOKIES", False):
        found["SESSION_COOKIE_SECURE"] = found["REMEMBER_COOKIE_SECURE"] = True
        # The __Host- prefix: browsers accept these cookies only over HTTPS, for this host alone and
        # path /, so no sibling subdomain can set or overwrite them.
        found["SESSION_COOKIE_NAME"], found["REMEMBER_COOKIE_NAME"] = "__Host-session", "__Host-remember"
    return found


def load(app: Flask, test_config: dict[str, Any] | None) -> None:
    app.config.from_mapping(defaults(app.instance_path))
    app.config.from_pyfile("config.py", silent=True)
    app.config.update(_from_environment())
    if test_config:
        app.config.update(test_config)
    if not app.config["SECRET_KEY"]:
        key_file = Path(app.instance_path) / SECRET_KEY_FILE
        if key_file.is_file():
            app.config["SECRET_KEY"] = key_file.read_text().strip()
    if app.config["PRISM_ROLE"] not in ROLES:
        raise RuntimeError(f"PRISM_ROLE={app.config['PRISM_ROLE']!r}: choose one of {', '.join(ROLES)}")
    _check_fusion(app.config)
    if not app.config["SECRET_KEY"]:
        raise RuntimeError(
            "No SECRET_KEY: run `python manage.py init-db` (it writes instance/secret_key) or set PRISM_SECRET_KEY."
        )


def _check_fusion(config: dict[str, Any]) -> None:
    """Parse the fusion settings once, so a typo stops the start instead of failing every job later:
    PRISM_FUSION_WEIGHTS becomes ``{part: weight}``, PRISM_AGREEMENT_THRESHOLD and
    PRISM_AGREEMENT_MODEL_THRESHOLD floats in -1..1."""
    from .fusion import parse_threshold, parse_weights

    try:
        config["PRISM_FUSION_WEIGHTS"] = parse_weights(config["PRISM_FUSION_WEIGHTS"])
        for name in ("PRISM_AGREEMENT_THRESHOLD", "PRISM_AGREEMENT_MODEL_THRESHOLD"):
            config[name] = parse_threshold(config[name], name)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None
