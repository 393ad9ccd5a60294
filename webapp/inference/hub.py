"""Where model weights come from: a local directory, a pulled snapshot, the Hugging Face cache, or a download.

This module only moves files; it never imports torch. ``resolve_source`` always returns a local directory,
so the loaders can call ``from_pretrained`` with ``local_files_only=True`` and never reach the network.
Downloads skip formats Prism cannot use (TensorFlow, Flax, ONNX, ...) and pickled PyTorch weights when the
repository also ships safetensors. ``pull`` marks a finished snapshot, so an interrupted pull is never
mistaken for a usable model.

A hub id may be pinned to a revision, ``org/name@<commit>`` (as pip pins a version): the download,
the cache lookup and the pulled directory then hold exactly that commit, whatever is pushed to the
repository later. ``require_pinned`` (PRISM_MODEL_REQUIRE_PINNED) refuses to download a hub id
that is not pinned to a full commit hash.

Before anything is fetched, one quick probe (``hub_problem``: a HEAD request to HF_ENDPOINT, through
the configured proxy if any, answered within ``PROBE_TIMEOUT_SECONDS``, remembered for
``PROBE_CACHE_SECONDS``) tells whether the hub can be reached at all. When it cannot, a cached copy is
used if there is one, and otherwise ``HubUnreachable`` says so at once, with the fix, instead of
huggingface_hub's retries running into a ``ConnectError`` half a minute later.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import certifi
from huggingface_hub import HfApi, constants, get_cached_repo_tree, is_offline_mode, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
)
from tqdm import tqdm

from .types import ModelSourceError, ModelState

# (state, fraction or None, detail); the same shape as ``service.ProgressCallback``.
Progress = Callable[[ModelState, "float | None", str], None]

_UNUSED_FORMATS = [
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.ot",
    "tf_model*",
    "flax_model*",
    "rust_model*",
    "onnx/*",
    "coreml/*",
    "*.tflite",
]
_PICKLED_WEIGHTS = ["*.bin", "*.pt", "*.pth"]
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
PULL_MARKER = ".prism-pulled"  # written by `pull` once the snapshot is complete; holds the hub id
README_MODELS = "README.md#models"  # where the messages below send an administrator
_LOCAL_SETTINGS = "PRISM_CAPTION_MODEL / PRISM_SENTIMENT_MODEL / PRISM_EMBEDDING_MODEL"
PROBE_TIMEOUT_SECONDS = 2.0
# A verdict is reused this long: four models loading together probe once, and a hub that comes back
# is noticed within a minute (a failed model is retried after PRISM_MODEL_RETRY_AFTER anyway).
PROBE_CACHE_SECONDS = 60.0
_probe_lock = threading.Lock()  # held during a probe, so concurrent loads wait for its verdict
_probes: dict[tuple[str, str | None], tuple[float, str | None]] = {}


class HubUnreachable(ModelSourceError):
    """The hub cannot be reached from this machine (no network, DNS, firewall, proxy) and the model is
    not on disk: no download can work until someone acts, so nothing is retried."""


class NotCached(ModelSourceError):
    """Offline (PRISM_MODEL_OFFLINE, HF_HUB_OFFLINE) and the model is not on disk."""


def slug(ref: str) -> str:
    """Return a single, safe directory name for a hub id: ``org/name`` becomes ``org--name``."""
    name = "--".join(part for part in ref.strip().split("/") if part not in ("", ".", ".."))
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]", "_", name)).strip(".")
    if not name:
        raise ModelSourceError(f"{ref!r} is not a usable model reference")
    return name


def split_revision(ref: str) -> tuple[str, str | None]:
    """``org/name@revision`` as (``org/name``, ``revision``); a directory or an unpinned id: (ref, None)."""
    if "@" not in ref or Path(ref).is_dir():
        return ref, None
    repo, _, revision = ref.rpartition("@")
    return repo, revision or None


def model_id(ref: str) -> str:
    """The id records are stamped with: the hub id (without its pin: the revision is stamped on its
    own), or a directory's pulled-from hub id, or its name."""
    path = Path(ref)
    if not path.is_dir():
        return split_revision(ref)[0]
    marker = path / PULL_MARKER
    if marker.is_file():
        return split_revision(marker.read_text(encoding="utf-8").strip())[0] or path.resolve().name
    return path.resolve().name


def ignore_patterns(repo_files: Iterable[str]) -> list[str]:
    """Patterns of files loading does not need; pickled weights are skipped when safetensors exist."""
    if any(name.endswith(".safetensors") for name in repo_files):
        return _UNUSED_FORMATS + _PICKLED_WEIGHTS
    return list(_UNUSED_FORMATS)


def resolve_source(
    ref: str,
    model_dir: Path,
    offline: bool,
    progress: Progress,
    *,
    require_pinned: bool = False,
    download: bool = True,
) -> str | None:
    """Return a local directory holding ``ref``: itself, a pulled snapshot, the HF cache, or a download.

    With ``download=False`` nothing is fetched: None means a download would be tried (the hub answers).
    Either way a ``ModelSourceError`` means the model cannot be had: the caller can fail at once.
    """
    if Path(ref).is_dir():
        return str(Path(ref))
    pulled = Path(model_dir) / slug(ref)
    if pulled.is_dir():
        if not (pulled / PULL_MARKER).is_file():
            raise ModelSourceError(
                f"{pulled} holds an unfinished download of {ref!r}: run `python manage.py models pull` again"
            )
        return str(pulled)
    if offline or is_offline_mode():
        return _from_cache(ref)
    if require_pinned and not _COMMIT.match(split_revision(ref)[1] or ""):
        raise ModelSourceError(
            f"{ref!r} is not pinned and PRISM_MODEL_REQUIRE_PINNED is set: name it as {ref}@<commit hash>; "
            "`python manage.py models pull` prints the commit it fetched"
        )
    progress(ModelState.LOADING, None, f"checking that the model hub {hub_endpoint()} can be reached")
    if (problem := hub_problem()) is not None:
        try:
            return _from_cache(ref)  # a cached copy serves while the hub cannot be asked for a newer one
        except NotCached:
            raise _unreachable(ref, problem) from None
    return _download(ref, progress) if download else None


def pull(ref: str, model_dir: Path, echo: Callable[[str], None] = print) -> Path:
    """Download a snapshot of ``ref`` into ``model_dir/slug(ref)`` with visible progress bars."""
    target = Path(model_dir) / slug(ref)
    if not is_offline_mode() and (problem := hub_problem()) is not None:
        raise _unreachable(ref, problem)
    echo(f"pulling {ref} into {target}")
    (target / PULL_MARKER).unlink(missing_ok=True)  # an update in progress is as unusable as a first pull
    _snapshot(ref, local_dir=target)
    (target / PULL_MARKER).write_text(ref + "\n", encoding="utf-8")
    return target


def revision_of(source: str | Path) -> str:
    """Identify the weights in ``source``: the hub commit when known, else a fingerprint of the files.

    A cache snapshot is named after its commit; a pulled snapshot records it in its download metadata.
    Any other directory gets ``sha256:`` of its config.json plus its weight files' names and sizes.
    """
    path = Path(source).resolve()
    if path.parent.name == "snapshots" and _COMMIT.match(path.name):
        return path.name
    metadata = path / ".cache" / "huggingface" / "download" / "config.json.metadata"
    if metadata.is_file():
        commit = metadata.read_text(encoding="utf-8").split("\n", 1)[0].strip()
        if _COMMIT.match(commit):
            return commit
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for weight in sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)):
        digest.update(f"{weight.name}:{weight.stat().st_size}\n".encode())
    return f"sha256:{digest.hexdigest()[:16]}"


def _from_cache(ref: str) -> str:
    repo, revision = split_revision(ref)
    try:
        # The same patterns as the download that filled the cache, or the snapshot counts as incomplete.
        return snapshot_download(
            repo, revision=revision, local_files_only=True, ignore_patterns=ignore_patterns(_cached_repo_files(ref))
        )
    except HFValidationError as exc:
        raise _not_a_model_reference(ref) from exc
    except LocalEntryNotFoundError as exc:
        raise NotCached(
            f"offline mode: model {ref!r} is not available offline (it is not in the local cache). Fix: run "
            "`python manage.py models pull` on a connected machine (then copy PRISM_MODEL_DIR here), or point "
            f"{_LOCAL_SETTINGS} at a local directory. See {README_MODELS}."
        ) from exc


def hub_endpoint() -> str:
    """The hub downloads go to: HF_ENDPOINT (a mirror) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_problem(timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """Why the hub cannot be reached, or None when it can: one HEAD request to ``hub_endpoint()``
    (through the CONNECT tunnel of the proxy HTTPS_PROXY / HTTP_PROXY name for it, NO_PROXY honoured)
    answered within ``timeout`` seconds, DNS and TLS included. The verdict is kept for
    ``PROBE_CACHE_SECONDS`` in this process."""
    endpoint = hub_endpoint()
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxies = urllib.request.getproxies()
    proxy = None if urllib.request.proxy_bypass(host) else proxies.get(url.scheme) or proxies.get("all")
    key = (endpoint, proxy)
    with _probe_lock:
        checked = _probes.get(key)
        if checked is not None and time.monotonic() - checked[0] < PROBE_CACHE_SECONDS:
            return checked[1]
        problem = _probe(host, port, url.scheme == "https", proxy, timeout)
        _probes[key] = (time.monotonic(), problem)
        return problem


def _probe(host: str, port: int, tls: bool, proxy: str | None, timeout: float) -> str | None:
    # getaddrinfo ignores socket timeouts (a failing resolver can take 20 s and more), so the attempt
    # runs in a daemon thread that is abandoned after ``timeout``.
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            _ask(host, port, tls, proxy, timeout)
        except OSError as exc:  # ssl.SSLError included
            outcome.append(f"{type(exc).__name__}: {exc}")
        else:
            outcome.append(None)

    thread = threading.Thread(target=attempt, name="prism-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return f"no answer from {proxy or f'{host}:{port}'} within {timeout:g} s"
    return outcome[0]


def _ask(host: str, port: int, tls: bool, proxy: str | None, timeout: float) -> None:
    """One HEAD request to the hub, directly or through the proxy's tunnel; OSError unless something
    answers HTTP. A bare TCP connection proves little: firewalls and interceptors accept those too."""
    connection = _tunnel(proxy, host, port, timeout) if proxy else socket.create_connection((host, port), timeout)
    try:
        if tls:
            context = ssl.create_default_context()
            context.load_verify_locations(certifi.where())  # the CAs httpx trusts, as well as the system's
            connection = context.wrap_socket(connection, server_hostname=host)
        connection.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = connection.recv(16)
    finally:
        connection.close()
    if not answer.startswith(b"HTTP/"):
        raise OSError(f"{host}:{port} accepted a connection but gave no HTTP answer")


def _tunnel(proxy: str, host: str, port: int, timeout: float) -> socket.socket:
    """A connection through the proxy's CONNECT tunnel to ``host:port``, as httpx makes; OSError unless
    the proxy agrees."""
    url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    request = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if url.username:
        credentials = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
        request += f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}\r\n"
    connection = socket.create_connection((url.hostname or "", url.port or 80), timeout=timeout)
    try:
        connection.sendall((request + "\r\n").encode())
        status_line = connection.recv(256).split(b"\r\n", 1)[0].decode("latin-1")
    except OSError:
        connection.close()
        raise
    if status_line.split(" ")[1:2] != ["200"]:
        connection.close()
        raise OSError(f"the proxy {url.hostname}:{url.port or 80} answered {status_line or 'nothing'!r}")
    return connection


def _unreachable(ref: str, problem: str) -> HubUnreachable:
    return HubUnreachable(
        f"hub unreachable: the model hub {hub_endpoint()} cannot be reached from this server ({problem}), "
        f"and model {ref!r} is not on disk. Fix: run `python manage.py models pull` on a connected machine, "
        f"copy PRISM_MODEL_DIR here and set PRISM_MODEL_OFFLINE=1; or point {_LOCAL_SETTINGS} at a local "
        f"directory; or, if the hub is reached through a proxy, set HTTPS_PROXY. See {README_MODELS}."
    )


def _download(ref: str, progress: Progress) -> str:
    progress(ModelState.DOWNLOADING, None, f"downloading {ref}")
    return _snapshot(ref, tqdm_class=_progress_bar(ref, progress))


def _snapshot(ref: str, **kwargs) -> str:
    """``snapshot_download`` of the files loading needs, with its errors turned into ModelSourceError."""
    repo, revision = split_revision(ref)
    try:
        return snapshot_download(repo, revision=revision, ignore_patterns=ignore_patterns(_repo_files(ref)), **kwargs)
    except HFValidationError as exc:
        raise _not_a_model_reference(ref) from exc
    except (HfHubHTTPError, LocalEntryNotFoundError) as exc:
        raise ModelSourceError(f"could not download model {ref!r}: {exc}") from exc


def _not_a_model_reference(ref: str) -> ModelSourceError:
    return ModelSourceError(f"model {ref!r} is neither an existing directory nor a valid hub id (org/name)")


def _repo_files(ref: str) -> list[str]:
    repo, revision = split_revision(ref)
    try:
        return HfApi().list_repo_files(repo, revision=revision)
    except Exception:  # noqa: BLE001 - the listing only narrows the download; snapshot_download reports real errors
        return _cached_repo_files(ref)


def _cached_repo_files(ref: str) -> list[str]:
    repo, revision = split_revision(ref)
    try:
        return [entry.path for entry in get_cached_repo_tree(repo, revision=revision)]
    except (CachedRepoTreeNotFoundError, HFValidationError):
        return []


def _progress_bar(ref: str, progress: Progress) -> type[tqdm]:
    """A silent tqdm class that turns snapshot_download's byte counts into ``progress`` reports.

    snapshot_download creates byte bars (unit "B") for bytes written and for network transfer, plus a
    file-count bar; only the bytes-written bar is counted. Its total grows as file downloads start, so the
    fraction is an estimate; with no total yet it is None.
    """
    lock = threading.Lock()  # updates arrive from snapshot_download's worker threads

    class _ProgressBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            desc = str(kwargs.get("desc") or "")
            self._counts_bytes = kwargs.get("unit") == "B" and not desc.startswith("Downloading bytes")
            self._bytes = float(kwargs.get("initial") or 0)

        def update(self, n: float | None = 1) -> None:
            if not self._counts_bytes or not n:
                return
            with lock:
                self._bytes += n
                done, total = self._bytes, self.total or 0
            fraction = min(done / total, 1.0) if total > 0 else None
            size = f"{done / 1e6:.0f}/{total / 1e6:.0f} MB" if total > 0 else f"{done / 1e6:.0f} MB"
            progress(ModelState.DOWNLOADING, fraction, f"downloading {ref}: {size}")

    return _ProgressBar
