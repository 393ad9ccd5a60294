"""Normalising checkpoint labels to negative/neutral/positive."""

from __future__ import annotations

import math

import pytest

from webapp.inference import labels
from webapp.inference.transformers_backend import load_sentiment_model


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1 star", "negative"),
        ("2 stars", "negative"),
        ("3 stars", "neutral"),
        ("4 stars", "positive"),
        ("5 stars", "positive"),
        ("POSITIVE", "positive"),
        ("Negative", "negative"),
        ("neutral", "neutral"),
    ],
)
def test_named_labels_map_by_name(raw, expected):
    """Star ratings and sentiment words map by name, whatever their case or position."""
    assert labels.level_of(raw, 0, 5) == expected


def test_unnamed_labels_map_by_position():
    """LABEL_i classes map by position for two- and three-class checkpoints."""
    assert [labels.level_of(f"LABEL_{i}", i, 2) for i in range(2)] == ["negative", "positive"]
    assert [labels.level_of(f"LABEL_{i}", i, 3) for i in range(3)] == ["negative", "neutral", "positive"]


def test_unknown_labels_of_a_larger_model_are_refused():
    """An unrecognised label in a model with more than three classes cannot be guessed."""
    with pytest.raises(ValueError, match="cannot map sentiment label 'joy'"):
        labels.level_of("joy", 0, 4)


def test_three_class_scores_pass_through():
    """A three-class model's scores are kept and the largest wins."""
    label, score, scores = labels.normalise({"negative": 0.1, "neutral": 0.2, "positive": 0.7}, (0.35, 0.65))

    assert (label, score) == ("positive", 0.7)
    assert scores == {"negative": 0.1, "neutral": 0.2, "positive": 0.7}


def test_star_probabilities_are_summed_per_level():
    """Five star classes collapse to three levels whose probabilities add up."""
    raw = {"1 star": 0.1, "2 stars": 0.2, "3 stars": 0.1, "4 stars": 0.3, "5 stars": 0.3}

    label, score, scores = labels.normalise(raw, (0.35, 0.65))

    assert label == "positive" and math.isclose(score, 0.6)
    assert scores == pytest.approx({"negative": 0.3, "neutral": 0.1, "positive": 0.6})


@pytest.mark.parametrize(
    ("positive", "expected_label", "expected_score"),
    [
        (0.5, "neutral", 1.0),
        (0.35, "neutral", 0.7),
        (0.65, "neutral", 0.7),
        (0.9, "positive", 0.9),
        (0.2, "negative", 0.8),
    ],
)
def test_two_class_models_call_the_middle_band_neutral(positive, expected_label, expected_score):
    """For a two-class model, P(positive) inside the neutral band (inclusive) is neutral."""
    label, score, scores = labels.normalise({"NEGATIVE": 1.0 - positive, "POSITIVE": positive}, (0.35, 0.65))

    assert label == expected_label
    assert score == pytest.approx(expected_score)
    assert set(scores) == {"negative", "positive"}


def test_star_checkpoint_normalises_to_three_levels(make_settings, stars_dir):
    """A real five-star checkpoint's output normalises to three levels summing to 1."""
    model = load_sentiment_model(make_settings(sentiment_model=str(stars_dir)), lambda *report: None)

    (raw,) = model.classify(["the food was great"])
    label, score, scores = labels.normalise(raw, (0.35, 0.65))

    assert list(raw) == ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    assert set(scores) == {"negative", "neutral", "positive"}
    assert math.isclose(sum(scores.values()), 1.0, rel_tol=1e-5)
    assert score == max(scores.values()) and scores[label] == score
