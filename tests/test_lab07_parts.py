"""Lab 07's parts outside the checks: the digits and their seeded outliers, the tabular corruptions, the
threshold widget, and the outlier_guard runtime served by a real MLServer."""

import json
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from labkit.client import Client, InferenceServerError
from labkit.data import (
    DIGIT_OUTLIER_KINDS,
    corrupt_rows,
    digit_outliers,
    load_digits,
    perturb_digits,
    photo_patches,
)
from labkit.serving import Server
from labkit.widgets import threshold_explorer, threshold_rates

RUNTIME = Path(__file__).resolve().parent.parent / "labs" / "runtimes" / "outlier_guard.py"


# -- data -------------------------------------------------------------------------------------------


def test_digit_parts_split_the_known_digits_and_hold_out_8_and_9():
    train, test, novel = load_digits("train"), load_digits("test"), load_digits("novel")
    assert len(train) + len(test) + len(novel) == 1797
    assert set(train.labels) == set(test.labels) == set(range(8))
    assert set(novel.labels) == {8, 9}
    assert abs(len(test) / (len(train) + len(test)) - 1 / 3) < 0.01
    assert train.X.shape == (len(train), 64) and train.images.shape == (len(train), 8, 8)
    for part in (train, test, novel):
        assert part.images.dtype == np.float32 and part.images.min() == 0 and part.images.max() == 1
    # no image is in both train and test, and the split is the same on every call
    assert not {r.tobytes() for r in train.X} & {r.tobytes() for r in test.X} - {np.zeros(64, np.float32).tobytes()}
    np.testing.assert_array_equal(load_digits("test").X, test.X)
    assert "Outliers" in train.card
    with pytest.raises(ValueError, match="part must be one of"):
        load_digits("validation")


@pytest.mark.parametrize("kind", ["noise", "mask"])
def test_perturbations_are_seeded_and_keep_shape_and_range(kind):
    images = load_digits("test").images[:50]
    a, b = perturb_digits(images, kind, seed=3), perturb_digits(images, kind, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, perturb_digits(images, kind, seed=4))
    assert a.shape == images.shape and a.min() >= 0 and a.max() <= 1
    assert np.array_equal(perturb_digits(images.reshape(50, 64), kind, 3), a.reshape(50, 64))
    changed = (a != images).reshape(50, -1).sum(axis=1)
    if kind == "mask":  # a 4x4 blot: at most 16 pixels change, and they become full ink
        assert (changed <= 16).all() and (a.reshape(50, -1).max(axis=1) == 1).all()
        assert ((a == 1).reshape(50, 8, 8).sum(axis=(1, 2)) >= 16).all()
    else:
        assert (changed > 32).all()


def test_bad_perturbation_arguments():
    with pytest.raises(ValueError, match="kind must be"):
        perturb_digits(np.zeros((2, 64)), "blur", 0)
    with pytest.raises(ValueError, match="shape"):
        perturb_digits(np.zeros((2, 7)), "noise", 0)
    with pytest.raises(ValueError, match="kind must be one of"):
        digit_outliers("letters", 3, 0)


def test_photo_patches_are_scaled_images_of_another_kind():
    patches = photo_patches(30, seed=0)
    assert patches.shape == (30, 8, 8)
    assert np.allclose(patches.min(axis=(1, 2)), 0) and np.allclose(patches.max(axis=(1, 2)), 1)
    np.testing.assert_array_equal(patches, photo_patches(30, seed=0))


@pytest.mark.parametrize("kind", DIGIT_OUTLIER_KINDS)
def test_digit_outliers(kind):
    images = digit_outliers(kind, 25, seed=1)
    assert images.shape == (25, 8, 8) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(images, digit_outliers(kind, 25, seed=1))


def test_corrupt_rows():
    X = np.random.default_rng(0).normal(5, 1, size=(200, 6))
    unit = corrupt_rows(X, "unit", seed=0)
    ratio = unit / X
    assert np.allclose(np.sort(ratio, axis=1)[:, -1], 10) and np.allclose(np.sort(ratio, axis=1)[:, :-1], 1)
    shuffled = corrupt_rows(X, "shuffle", seed=0)
    for column in range(X.shape[1]):  # every value comes from the same column of another row
        assert set(shuffled[:, column]) <= set(X[:, column])
    np.testing.assert_array_equal(shuffled, corrupt_rows(X, "shuffle", seed=0))
    assert not np.array_equal(X, corrupt_rows(X, "shuffle", seed=0))
    with pytest.raises(ValueError, match="kind must be one of"):
        corrupt_rows(X, "swap", 0)
    with pytest.raises(ValueError, match="2-D"):
        corrupt_rows(np.ones(5), "unit", 0)


# -- widget -----------------------------------------------------------------------------------------


def test_threshold_rates():
    rates = threshold_rates(2, [1, 2, 3, 4], [2, 5, 6])
    assert rates == {"fpr": 0.5, "recall": 2 / 3, "precision": 0.5}
    assert np.isnan(threshold_rates(10, [1], [2])["precision"])


def test_threshold_explorer_follows_the_slider():
    clean = np.random.default_rng(0).gamma(2, 1, 500)
    outliers = np.random.default_rng(1).gamma(6, 1, 100)
    box = threshold_explorer(clean, outliers)
    assert np.isclose(box.slider.value, np.quantile(clean, 0.95), rtol=1e-3)
    assert "5.0%" in box.readout.value
    box.slider.value = float(np.quantile(clean, 0.5))
    rates = threshold_rates(box.slider.value, clean, outliers)
    assert f"{rates['fpr']:.1%}" in box.readout.value and f"{rates['recall']:.1%}" in box.readout.value
    assert rates["fpr"] > 0.4
    linear = threshold_explorer(clean - 5, outliers - 5, threshold=0)  # negative scores: a linear slider
    assert linear.slider.value == 0
    with pytest.raises(ValueError, match="at least one"):
        threshold_explorer([], outliers)


# -- the outlier_guard runtime ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    """A served guard: PCA as a linear autoencoder, a logistic regression as the classifier."""
    train = load_digits("train")
    pca = PCA(8, random_state=0).fit(train.X)
    folder = tmp_path_factory.mktemp("repo") / "digits"
    folder.mkdir()
    shutil.copy(RUNTIME, folder)
    classifier = LogisticRegression(max_iter=2000).fit(train.X, train.labels)
    joblib.dump(classifier, folder / "classifier.joblib")
    np.savez(folder / "autoencoder.npz", kernel_0=pca.components_.T, bias_0=-pca.mean_ @ pca.components_.T,
             kernel_1=pca.components_, bias_1=pca.mean_, activations=np.array(["linear", "linear"]))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "digits", "implementation": "outlier_guard.OutlierGuard",
        "parameters": {"uri": "./classifier.joblib", "extra": {"threshold": 0.02}}}))
    with Server(folder.parent, settings={"parallel_workers": 0}) as server, Client(server) as client:
        yield client, pca, classifier


def test_guard_returns_prediction_score_and_flag(guard):
    client, pca, classifier = guard
    rows = np.concatenate([load_digits("test").X[:20], digit_outliers("photo", 5, 0).reshape(5, 64)])
    served = client.predict("digits", rows)
    expected = ((rows - pca.inverse_transform(pca.transform(rows))) ** 2).mean(axis=1)
    np.testing.assert_allclose(served["outlier_score"].ravel(), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(served["is_outlier"].ravel(), expected > 0.02)
    np.testing.assert_array_equal(served["predict"].ravel(), classifier.predict(rows))
    assert served["is_outlier"].ravel()[-5:].all()


@pytest.mark.parametrize("body, words", [
    ({"inputs": [{"name": "x", "shape": [1, 32], "datatype": "FP32", "data": [0.0] * 32}]}, "expected shape [-1, 64]"),
    ({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "INT64", "data": [0] * 64}]}, "FP32 or FP64"),
    ({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}] * 2}, "one input tensor"),
    ({"inputs": [{"name": "x", "shape": [64], "datatype": "FP64", "data": [0.0] * 64}]}, "expected shape"),
], ids=["32 pixels", "integers", "two inputs", "1-D"])
def test_guard_refuses_bad_input_with_a_400(guard, body, words):
    client = guard[0]
    with pytest.raises(InferenceServerError) as refused:
        client.infer("digits", body)
    assert refused.value.status == 400
    assert words in str(refused.value)
    assert client.predict("digits", np.zeros((1, 64)))["predict"].shape == (1, 1)  # still serving


def test_guard_refuses_nan_pixels(guard):
    with pytest.raises(InferenceServerError) as refused:
        guard[0].predict("digits", np.full((2, 64), np.nan))
    assert refused.value.status == 400 and "finite" in str(refused.value)


def test_threshold_explorer_with_equal_scores():
    box = threshold_explorer([1.0, 1.0], [1.0])
    assert np.isclose(box.slider.value, 1.0)  # the range was widened around the one score
    assert "<b>0.0%</b> of clean rows" in box.readout.value
