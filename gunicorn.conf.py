"""Production web server for Prism: ``gunicorn -c gunicorn.conf.py`` (after ``python manage.py init-db``).

The web processes never load a model: submissions are stored and queued, and ``manage.py worker``
processes run the models (``webapp/jobs``). So this is sized like any database-backed web app:
- ``2 x cores`` worker processes with 16 request threads each (gthread): a request mostly waits on
  the database, and ``/api/v1/predict`` waits for its job;
- ``preload_app`` stays off: each worker builds its own app and connection pool after fork;
- ``timeout`` is above PRISM_INFERENCE_TIMEOUT (30 s), how long ``/api/v1/predict`` waits for its
  job before answering 503, so gunicorn never kills a worker that is about to answer.
Put a buffering reverse proxy (nginx) in front of it, and set ``PRISM_TRUSTED_PROXIES``. Every value
can be overridden by the PRISM_* variables below or on the gunicorn command line.
"""

import os

wsgi_app = "webapp:create_app()"
bind = os.environ.get("PRISM_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("PRISM_WORKERS", 2 * (os.cpu_count() or 1)))
worker_class = "gthread"
threads = int(os.environ.get("PRISM_THREADS", 16))
preload_app = False
timeout = 60
graceful_timeout = 30
keepalive = 5
max_requests = 5000  # recycle workers now and then to cap slow memory growth
max_requests_jitter = 500
accesslog = "-"
# The path without its query string (%(U)s) and no referrer: a history search (?q=...) holds a user's
# own words, which do not belong in a server log.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s "%(a)s"'
