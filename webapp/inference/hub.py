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
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from huggingface_hub import HfApi, get_cached_repo_tree, is_offline_mode, snapshot_download
from huggingface_hub.errors import (
    CachedRepoTreeNotFoundError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
)
from tqdm import tqdm

from .types import ModelState

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


class ModelSourceError(RuntimeError):
    """A model cannot be found or downloaded; the message says what to do about it."""


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
    ref: str, model_dir: Path, offline: bool, progress: Progress, *, require_pinned: bool = False
) -> str:
    """Return a local directory holding ``ref``: itself, a pulled snapshot, the HF cache, or a download."""
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
    return _download(ref, progress)


def pull(ref: str, model_dir: Path, echo: Callable[[str], None] = print) -> Path:
    """Download a snapshot of ``ref`` into ``model_dir/slug(ref)`` with visible progress bars."""
    target = Path(model_dir) / slug(ref)
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
        raise ModelSourceError(
            f"model {ref!r} is not available offline: run `python manage.py models pull` on a connected "
            "machine (then copy PRISM_MODEL_DIR here), or set PRISM_CAPTION_MODEL / PRISM_SENTIMENT_MODEL "
            f"to a local directory. ({type(exc).__name__})"
        ) from exc


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
