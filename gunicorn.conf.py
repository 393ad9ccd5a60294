"""Production server for Prism: ``gunicorn -c gunicorn.conf.py`` (after ``python manage.py init-db``).

CPU inference sets the budget, not gunicorn's usual ``2 x cores + 1``:
- each worker process holds its own copy of the models (about 1.3 GB in fp32, 0.7 GB in bf16 for
  the defaults), so a few workers, each using ``cores / workers`` torch threads, beat many
  workers fighting over the same cores (benoitc/gunicorn#2873);
- request threads (gthread) mostly wait on the model worker's batch futures, so 16 per process
  are cheap and let concurrent requests share a batch;
- models load after fork, once per worker (``preload_app`` stays off: preloading torch before
  fork can hang workers, pytorch/pytorch#49555); ``PRISM_WARM_ON_START=1`` starts the load as soon
  as a worker boots instead of on its first request;
- ``timeout`` is above PRISM_INFERENCE_TIMEOUT (30 s) so the app answers 503 before gunicorn
  would kill a worker. Put a buffering reverse proxy (nginx) in front of it.
With ``PRISM_ROLE=web`` (scale-out: models run in `manage.py worker` processes) a web worker holds no
model, so more of them are cheap: set ``PRISM_WORKERS`` to about 2 x cores there.
Every value can be overridden by the PRISM_* variables below or on the gunicorn command line.
"""

import os

wsgi_app = "webapp:create_app()"
bind = os.environ.get("PRISM_BIND", "127.0.0.1:8000")
_cores = os.cpu_count() or 1
workers = int(os.environ.get("PRISM_WORKERS", max(1, _cores // 4)))
worker_class = "gthread"
threads = int(os.environ.get("PRISM_THREADS", 16))
# Each worker's torch uses its share of the cores; set before the app (and torch) load in the worker.
os.environ.setdefault("PRISM_TORCH_THREADS", str(max(1, _cores // workers)))
preload_app = False
timeout = 60
graceful_timeout = 30
keepalive = 5
max_requests = 5000  # recycle workers now and then to cap slow memory growth
max_requests_jitter = 500
accesslog = "-"


def post_worker_init(worker) -> None:
    """Optionally start loading the models in each freshly forked worker."""
    warm = os.environ.get("PRISM_WARM_ON_START", "").lower() in {"1", "true", "yes", "on"}
    if warm and os.environ.get("PRISM_ROLE", "all") != "web":
        from webapp.inference import EXTENSION_KEY

        worker.wsgi.extensions[EXTENSION_KEY].warm(wait=0)
