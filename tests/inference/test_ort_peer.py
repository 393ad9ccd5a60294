"""The bench's ONNX Runtime peer on tiny checkpoints: exact against transformers in float32, never a time."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from tiny_models import tiny_settings

pytest.importorskip("onnx", reason="the ONNX Runtime peer needs onnx (requirements.txt)")

from webapp.inference import bench, ort_peer, transformers_backend  # noqa: E402

NEW_TOKENS = bench.NEW_TOKENS


def _no_progress(*args) -> None:
    pass


@pytest.fixture(scope="module")
def settings(tmp_path_factory, vit_gpt2_dir, sentiment3_dir):
    return tiny_settings(
        tmp_path_factory.mktemp("models"), caption_model=str(vit_gpt2_dir), sentiment_model=str(sentiment3_dir)
    )


@pytest.fixture(scope="module")
def captioner(settings):
    """The float32 transformers model the peer is exported from (the bench's baseline loads it the same way)."""
    return transformers_backend.load_caption_model(replace(settings, precision="fp32"), _no_progress)


@pytest.fixture(scope="module")
def caption_peers(settings, tmp_path_factory):
    return ort_peer.export_caption(settings, tmp_path_factory.mktemp("caption-graphs"), threads=1)


@pytest.fixture(scope="module")
def pixel_values(captioner) -> np.ndarray:
    return np.stack([captioner.prepare(image) for image in bench.sample_images(8)])


def test_exported_step_reproduces_the_decoders_log_probabilities(captioner, pixel_values, tmp_path):
    """Step by step, with beams reordered between steps, the ONNX step's log-probabilities are those of
    the transformers decoder run on the whole prefix (no cache), over the entire vocabulary."""
    model = captioner.model
    images, beams, steps = 2, 2, 5
    pixels = torch.from_numpy(pixel_values[:images])
    with torch.no_grad():
        cross = ort_peer._CaptionEncoder(model)(pixels)
        encoded = model.encoder(pixel_values=pixels).last_hidden_state.repeat_interleave(beams, dim=0)
    vocab = model.decoder.config.vocab_size
    step = ort_peer._CaptionStep(model.decoder, candidates=beams * vocab)  # every candidate, in score order
    session = ort_peer._session(ort_peer.export_caption_step(step, cross, tmp_path / "step.onnx"), threads=1)

    rows = images * beams
    heads, head_dim = model.decoder.config.n_head, model.decoder.config.n_embd // model.decoder.config.n_head
    layers = model.decoder.config.n_layer
    past = [np.zeros((rows, heads, 0, head_dim), np.float32)] * (2 * layers)
    rng = np.random.default_rng(0)
    prefixes = np.zeros((rows, 0), dtype=np.int64)
    beam_idx = np.arange(rows)
    for position in range(steps):
        tokens = rng.integers(0, vocab, size=rows)
        feeds = {
            "input_ids": tokens,
            "position": np.array([position]),
            "beam_idx": beam_idx,
            "beam_scores": np.zeros(rows, np.float32),
            "vocab_mask": np.zeros(vocab, np.float32),
            **dict(zip(ort_peer._cache_names("past", layers), past, strict=True)),
            **dict(zip(ort_peer._cache_names("cross", layers), [c.numpy() for c in cross], strict=True)),
        }
        top_scores, top_indices, *past = session.run(None, feeds)
        prefixes = np.concatenate([prefixes[beam_idx], tokens[:, None]], axis=1)
        log_probs = np.empty((images, beams * vocab), np.float32)
        np.put_along_axis(log_probs, top_indices, top_scores, axis=1)
        with torch.no_grad():
            logits = model.decoder(input_ids=torch.from_numpy(prefixes), encoder_hidden_states=encoded).logits
        expected = logits[:, -1].log_softmax(dim=-1).numpy()
        np.testing.assert_allclose(log_probs.reshape(rows, vocab), expected, atol=2e-5, rtol=0)
        # The next step continues from beams picked at random within each image (a beam-search reorder).
        beam_idx = (np.arange(images)[:, None] * beams + rng.integers(0, beams, size=(images, beams))).reshape(rows)


@pytest.mark.parametrize("num_beams", [4, 1])
def test_fp32_peer_decodes_exactly_as_generate(captioner, caption_peers, pixel_values, num_beams):
    """The float32 graphs give generate()'s tokens for every image (batch-1 float32, as the bench's
    baseline), greedy and beam 4, at the bench's fixed length."""
    expected = []
    for pixels in pixel_values:
        with torch.no_grad():
            ids = captioner.model.generate(
                pixel_values=torch.from_numpy(pixels[None]),
                num_beams=num_beams,
                min_new_tokens=NEW_TOKENS,
                max_new_tokens=NEW_TOKENS,
            )
        expected.append(ids[0, 1:].numpy())
    got = caption_peers["fp32"].generate(pixel_values, num_beams, NEW_TOKENS)
    np.testing.assert_array_equal(got, np.stack(expected))


def test_int8_peer_writes_captions_of_the_fixed_length(caption_peers, pixel_values):
    """The quantised graphs run, batched, and write exactly NEW_TOKENS tokens, none of them end-of-sequence."""
    peer = caption_peers["int8"]
    for num_beams in (4, 1):
        ids = peer.generate(pixel_values, num_beams, NEW_TOKENS)
        assert ids.shape == (len(pixel_values), NEW_TOKENS)
        assert not (ids == peer.eos_id).any()
    captions = peer.caption(bench.sample_images(3), 4, NEW_TOKENS)
    assert len(captions) == 3 and all(captions)


def test_settings_the_peer_lacks_are_refused(captioner, settings, blip_dir):
    """A generation setting that would change generate()'s search, or another family, fails before any export."""
    generation = captioner.model.generation_config
    generation.no_repeat_ngram_size = 3
    try:
        with pytest.raises(ort_peer.PeerUnsupported, match="no_repeat_ngram_size"):
            ort_peer._checked_captioner(captioner)
    finally:
        generation.no_repeat_ngram_size = 0
    with pytest.raises(ort_peer.PeerUnsupported, match="VisionEncoderDecoder"):
        ort_peer.export_caption(replace(settings, caption_model=str(blip_dir)), settings.model_dir, threads=1)


def test_sentiment_peer_matches_torch(settings, tmp_path):
    """Length-bucketed float32 probabilities equal Prism's float32 ones within 1e-4; int8 runs on the same texts."""
    texts = bench.sample_texts(40)
    reference = transformers_backend.load_sentiment_model(replace(settings, precision="fp32"), _no_progress)
    expected = reference.classify(texts)
    peers = ort_peer.export_sentiment(settings, tmp_path, threads=1, max_batch=16)
    got = peers["fp32"].classify(texts)
    assert [list(row) for row in got] == [list(row) for row in expected]  # label names in id order
    worst = max(abs(row[name] - want[name]) for row, want in zip(got, expected, strict=True) for name in want)
    assert worst < 1e-4
    quantised = peers["int8"].classify(texts)
    assert len(quantised) == len(texts)
    assert all(abs(sum(row.values()) - 1.0) < 1e-5 for row in quantised)


@pytest.fixture(scope="module")
def bench_result(tmp_path_factory, vit_gpt2_dir, sentiment3_dir):
    """One small bench run with the peer, at the target levels (8 caption and 16 sentiment clients)."""
    settings = tiny_settings(tmp_path_factory.mktemp("bench-models"), torch_threads=0)
    return bench.run(
        settings,
        caption_model=str(vit_gpt2_dir),
        sentiment_model=str(sentiment3_dir),
        options=bench.BenchOptions(clients=(8, 16), items=2, gemm_size=128, peer="onnxruntime"),
        echo=lambda line: None,
    )


def test_bench_reports_the_peer_and_its_targets(bench_result, tmp_path):
    """--peer adds the peer's runs and checks to each kind, three Prism ÷ ORT targets and a report section."""
    caption, sentiment = bench_result["caption"]["peer"], bench_result["sentiment"]["peer"]
    assert [entry["name"] for entry in caption["runs"]] == ["int8 beam4", "int8 greedy"]
    assert [entry["name"] for entry in sentiment["runs"]] == ["int8"]
    assert caption["batch_size"] == bench.CAPTION_TARGET_CLIENTS
    assert sentiment["batch_size"] == bench.SENTIMENT_TARGET_CLIENTS
    for peer in (caption, sentiment):
        for entry in peer["runs"]:  # at least 3 requests per client, as Prism's levels
            assert entry["requests"] >= 3 * peer["batch_size"] and entry["items_per_second"] > 0
            assert entry["agreement_with_fp32"]["compared"] > 0
    # The float32 graphs decode as the float32 baseline on every image it captioned, and classify alike.
    assert {name: check["rate"] for name, check in caption["fp32_check"].items()} == {"beam4": 1.0, "greedy": 1.0}
    assert sentiment["fp32_check"]["text"]["rate"] == 1.0
    assert sentiment["fp32_check"]["text"]["max_probability_difference"] < 1e-4

    peer_targets = [target for target in bench_result["targets"] if "Prism ÷ ORT" in target["name"]]
    assert [target["name"] for target in peer_targets] == [
        "captions int8 beam4, 8 clients: Prism ÷ ORT items/s (int8 beam4)",
        "captions int8 greedy, 8 clients: Prism ÷ ORT items/s (int8 greedy)",
        "sentiment bf16, 16 clients: Prism ÷ ORT items/s (int8)",
    ]
    prism = _level(bench_result["caption"], "int8 beam4", 8)["items_per_second"]
    assert peer_targets[0]["measured"] == pytest.approx(prism / caption["runs"][0]["items_per_second"])
    assert all(target["passed"] in (True, False) and target["goal"] == ">= 1" for target in peer_targets)

    report = bench.format_report(bench_result)
    assert report.count("ONNX Runtime peer: onnxruntime") == 2 and "Peer fp32 graphs vs fp32 batch-1" in report
    path = tmp_path / "bench.json"
    bench.write_json(bench_result, path)
    assert json.loads(path.read_text())["caption"]["peer"]["runs"][0]["name"] == "int8 beam4"


def test_targets_without_the_peer_are_unchanged(bench_result):
    """Without --peer nothing is added: no peer entry, no Prism ÷ ORT target."""
    without = {**bench_result, "caption": {**bench_result["caption"], "peer": None}}
    without["sentiment"] = {**bench_result["sentiment"], "peer": None}
    assert not [target for target in bench.targets(without) if "ORT" in target["name"]]
    assert "ONNX Runtime peer" not in bench.format_report(without)


def _level(kind: dict, run: str, clients: int) -> dict:
    entry = next(entry for entry in kind["runs"] if entry["name"] == run)
    return next(level for level in entry["levels"] if level["clients"] == clients)
