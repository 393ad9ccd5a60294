"""Model source resolution, download filtering and progress, all without a network."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.utils import filter_repo_objects

from webapp.inference import hub
from webapp.inference.types import ModelState

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO_FILES = [
    ".gitattributes",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tf_model.h5",
    "flax_model.msgpack",
    "rust_model.ot",
    "onnx/encoder_model.onnx",
    "coreml/model.mlpackage/Data/weights.bin",
    "model.tflite",
    "preprocessor_config.json",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
]


class FakeHubApi:
    """Stands in for huggingface_hub.HfApi: the repository lists REPO_FILES."""

    def list_repo_files(self, repo_id, revision=None):
        return REPO_FILES


def _refuse_hub(*args, **kwargs):
    raise AssertionError("the hub must not be consulted")


def _no_progress(state: ModelState, fraction: float | None, detail: str) -> None:
    pass


def test_slug_turns_a_hub_id_into_one_directory_name():
    """A hub id becomes a single reversible directory name."""
    assert hub.slug("nlpconnect/vit-gpt2-image-captioning") == "nlpconnect--vit-gpt2-image-captioning"


@pytest.mark.parametrize("ref", ["../../etc/passwd", "org/../../secret", "/abs/path", "org/..hidden", "a b/c:d"])
def test_slug_never_escapes_the_model_directory(ref, tmp_path):
    """Whatever the reference, the slug is one path component inside the model directory."""
    name = hub.slug(ref)

    assert "/" not in name and "\\" not in name and ".." not in name and name
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()


def test_slug_refuses_a_reference_with_no_usable_name():
    """A reference made only of dots and slashes is refused."""
    with pytest.raises(hub.ModelSourceError):
        hub.slug("../..")


def _pulled(model_dir: Path, ref: str) -> Path:
    """A directory as `pull` leaves it after a complete download."""
    pulled = model_dir / hub.slug(ref)
    pulled.mkdir(parents=True)
    (pulled / hub.PULL_MARKER).write_text(ref + "\n")
    return pulled


def test_model_id_names_the_hub_id_or_the_directory(tmp_path):
    """A hub id is its own model id; a pulled directory reports its hub id, any other directory its name."""
    pulled = _pulled(tmp_path, "Salesforce/blip-image-captioning-base")
    plain = tmp_path / "my-captioner"
    plain.mkdir()

    assert hub.model_id("Salesforce/blip-image-captioning-base") == "Salesforce/blip-image-captioning-base"
    assert hub.model_id(str(pulled)) == "Salesforce/blip-image-captioning-base"
    assert hub.model_id(str(plain)) == "my-captioner"


def test_a_local_directory_wins(tmp_path, monkeypatch):
    """A reference that is an existing directory is used as is, even online."""
    monkeypatch.setattr(hub, "snapshot_download", _refuse_hub)
    local = tmp_path / "my-captioner"
    local.mkdir()

    assert hub.resolve_source(str(local), tmp_path / "models", False, _no_progress) == str(local)


def test_a_pulled_snapshot_wins_over_the_hub(tmp_path, monkeypatch):
    """A hub id pulled into the model directory loads from there without asking the hub, even online."""
    monkeypatch.setattr(hub, "snapshot_download", _refuse_hub)
    monkeypatch.setattr(hub, "HfApi", _refuse_hub)
    pulled = _pulled(tmp_path / "models", "org/captioner")

    assert hub.resolve_source("org/captioner", tmp_path / "models", False, _no_progress) == str(pulled)


def test_an_unfinished_pull_is_refused(tmp_path, monkeypatch):
    """A pulled directory without the completion marker (an interrupted pull) fails with what to do."""
    monkeypatch.setattr(hub, "snapshot_download", _refuse_hub)
    (tmp_path / "models" / "org--captioner").mkdir(parents=True)

    with pytest.raises(hub.ModelSourceError, match="unfinished download of 'org/captioner'.*models pull"):
        hub.resolve_source("org/captioner", tmp_path / "models", True, _no_progress)


def test_offline_uses_the_hugging_face_cache(tmp_path, monkeypatch):
    """Offline, a hub id found in the Hugging Face cache resolves to its snapshot, stamped with its commit."""
    cache = tmp_path / "hf-cache"
    repo = cache / "models--org--captioner"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    source = hub.resolve_source("org/captioner", tmp_path / "models", True, _no_progress)

    assert Path(source) == snapshot.resolve()
    assert hub.revision_of(source) == COMMIT


def test_offline_missing_model_raises_a_clear_error(tmp_path, monkeypatch):
    """Offline, a hub id that is nowhere on disk fails with instructions, not a network retry."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))

    with pytest.raises(hub.ModelSourceError, match="model 'org/absent' is not available offline") as caught:
        hub.resolve_source("org/absent", tmp_path / "models", True, _no_progress)

    assert "python manage.py models pull" in str(caught.value)


def test_a_missing_directory_is_reported_as_such(tmp_path):
    """A reference that is neither an existing directory nor a hub id says so instead of 'not offline'."""
    with pytest.raises(hub.ModelSourceError, match="neither an existing directory nor a valid hub id"):
        hub.resolve_source(str(tmp_path / "no" / "such" / "dir"), tmp_path / "models", True, _no_progress)


def test_download_skips_pickles_and_foreign_formats_when_safetensors_exist():
    """With safetensors present only safetensors weights and the config/tokenizer files are fetched."""
    kept = set(filter_repo_objects(REPO_FILES, ignore_patterns=hub.ignore_patterns(REPO_FILES)))

    assert kept == {
        ".gitattributes",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "vocab.json",
        "merges.txt",
    }


def test_download_keeps_pytorch_weights_when_there_are_no_safetensors():
    """A repository without safetensors still gets its PyTorch weights, but no TF/Flax/ONNX files."""
    files = [name for name in REPO_FILES if not name.endswith(".safetensors")]

    kept = set(filter_repo_objects(files, ignore_patterns=hub.ignore_patterns(files)))

    assert "pytorch_model.bin" in kept
    foreign = {
        "tf_model.h5",
        "flax_model.msgpack",
        "rust_model.ot",
        "onnx/encoder_model.onnx",
        "model.tflite",
    }
    assert not kept & foreign


def test_online_resolution_downloads_with_filters_and_reports_progress(tmp_path, monkeypatch):
    """Online, a hub id is downloaded into the cache with the weight filters and a progress hook."""
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        bar = kwargs["tqdm_class"](desc="Reconstructing", total=4_000_000, initial=0, unit="B")
        bar.update(1_000_000)
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(hub, "HfApi", FakeHubApi)
    monkeypatch.setattr(hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(hub, "hub_problem", lambda: None)  # the hub answers the reachability probe
    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    reports = []

    source = hub.resolve_source("org/captioner", tmp_path / "models", False, lambda *r: reports.append(r))

    assert source == str(tmp_path / "snapshot")
    ((repo_id, kwargs),) = calls
    assert repo_id == "org/captioner" and "*.bin" in kwargs["ignore_patterns"]
    assert reports[0][0] is ModelState.LOADING and "can be reached" in reports[0][2]  # the probe, first
    assert reports[1] == (ModelState.DOWNLOADING, None, "downloading org/captioner")
    assert reports[-1] == (ModelState.DOWNLOADING, 0.25, "downloading org/captioner: 1/4 MB")


def test_progress_counts_written_bytes_only():
    """Only the bytes-written bar reports; transfer and file-count bars stay silent; no total means None."""
    reports = []
    bar_class = hub._progress_bar("org/m", lambda *r: reports.append(r))

    bar_class(desc="Downloading bytes", total=0, unit="B").update(500)
    bar_class(desc="Fetching 3 files", total=3).update(1)
    written = bar_class(desc="Reconstructing (incomplete total...)", total=0, initial=0, unit="B")
    written.update(2_000_000)
    written.total = 8_000_000  # snapshot_download grows the total as file downloads start
    written.update(2_000_000)

    assert reports == [
        (ModelState.DOWNLOADING, None, "downloading org/m: 2 MB"),
        (ModelState.DOWNLOADING, 0.5, "downloading org/m: 4/8 MB"),
    ]


def test_pull_downloads_into_the_model_directory(tmp_path, monkeypatch):
    """`pull` snapshots a hub id into model_dir/slug(ref), which resolve_source then prefers."""
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append(kwargs)
        Path(kwargs["local_dir"]).mkdir(parents=True, exist_ok=True)
        return str(kwargs["local_dir"])

    monkeypatch.setattr(hub, "HfApi", FakeHubApi)
    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)

    target = hub.pull("org/captioner", tmp_path / "models", echo=lambda line: None)

    assert target == tmp_path / "models" / "org--captioner"
    assert "*.h5" in calls[0]["ignore_patterns"] and "tqdm_class" not in calls[0]
    assert hub.model_id(str(target)) == "org/captioner"
    assert hub.resolve_source("org/captioner", tmp_path / "models", True, _no_progress) == str(target)


def test_pulled_snapshot_revision_is_its_commit(tmp_path):
    """A directory made by `pull` is stamped with the commit recorded in its download metadata."""
    metadata = tmp_path / ".cache" / "huggingface" / "download" / "config.json.metadata"
    metadata.parent.mkdir(parents=True)
    metadata.write_text(f'{COMMIT}\n"etag"\n1700000000.0\n')

    assert hub.revision_of(tmp_path) == COMMIT


def test_local_directory_revision_fingerprints_config_and_weights(tmp_path):
    """A plain directory gets a stable fingerprint that changes when its weights change."""
    (tmp_path / "config.json").write_text('{"model_type": "blip"}')
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    first = hub.revision_of(tmp_path)

    assert hub.revision_of(tmp_path) == first and first.startswith("sha256:")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    assert hub.revision_of(tmp_path) != first


def test_a_failed_pull_leaves_no_usable_snapshot(tmp_path, monkeypatch):
    """A pull that dies half-way raises ModelSourceError, and the half-filled directory is not used."""

    def dying_snapshot_download(repo_id, **kwargs):
        Path(kwargs["local_dir"], "config.json").parent.mkdir(parents=True, exist_ok=True)
        Path(kwargs["local_dir"], "config.json").write_text("{}")
        raise LocalEntryNotFoundError("connection lost")

    monkeypatch.setattr(hub, "_repo_files", lambda ref: [])
    monkeypatch.setattr(hub, "snapshot_download", dying_snapshot_download)

    with pytest.raises(hub.ModelSourceError, match="could not download model 'org/captioner'"):
        hub.pull("org/captioner", tmp_path / "models", echo=lambda line: None)
    with pytest.raises(hub.ModelSourceError, match="unfinished download"):
        hub.resolve_source("org/captioner", tmp_path / "models", True, _no_progress)


def test_a_pinned_hub_id_downloads_exactly_that_commit(tmp_path, monkeypatch):
    """Issue #8, finding 9: ``org/name@<commit>`` fetches (and pulls) that revision, and records are
    stamped with the plain hub id; before, every download took whatever the repository's head was."""
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs.get("revision")))
        target = Path(kwargs.get("local_dir") or tmp_path / "snapshot")
        target.mkdir(parents=True, exist_ok=True)
        return str(target)

    monkeypatch.setattr(hub, "HfApi", FakeHubApi)
    monkeypatch.setattr(hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(hub, "hub_problem", lambda: None)  # the hub answers the reachability probe
    monkeypatch.setattr(hub, "snapshot_download", fake_snapshot_download)
    pinned = f"org/captioner@{COMMIT}"

    hub.resolve_source(pinned, tmp_path / "models", False, _no_progress, require_pinned=True)
    pulled = hub.pull(pinned, tmp_path / "models", echo=lambda line: None)

    assert calls == [("org/captioner", COMMIT), ("org/captioner", COMMIT)]
    assert hub.split_revision(pinned) == ("org/captioner", COMMIT)
    assert hub.model_id(pinned) == hub.model_id(str(pulled)) == "org/captioner"
    assert hub.resolve_source(pinned, tmp_path / "models", True, _no_progress) == str(pulled)


@pytest.mark.parametrize("ref", ["org/captioner", "org/captioner@main", "org/captioner@v1.0"])
def test_require_pinned_refuses_to_download_an_unpinned_model(tmp_path, monkeypatch, ref):
    monkeypatch.setattr(hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(hub, "snapshot_download", _refuse_hub)
    with pytest.raises(hub.ModelSourceError, match="is not pinned and PRISM_MODEL_REQUIRE_PINNED is set"):
        hub.resolve_source(ref, tmp_path / "models", False, _no_progress, require_pinned=True)


def test_a_local_directory_needs_no_pin(tmp_path):
    assert hub.resolve_source(str(tmp_path), tmp_path / "models", False, _no_progress, require_pinned=True) == str(
        tmp_path
    )
