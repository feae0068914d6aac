"""labkit.widgets.drift_explorer and shifted_window."""

import matplotlib
import numpy as np
import pytest
from scipy import stats

from labkit.widgets import drift_explorer, shifted_window

matplotlib.use("Agg")


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(400, 5)) * [1, 2, 3, 4, 5] + 10, rng.normal(size=(2000, 5)) * [1, 2, 3, 4, 5] + 10


def ks_detect(x_ref):
    def detect(x):
        p = stats.ks_2samp(x_ref, x, axis=0).pvalue
        return {"data": {"is_drift": int((p < 0.05 / len(p)).any()), "p_val": p, "threshold": 0.05 / len(p)}}
    return detect


def test_shifted_window_moves_and_stretches_one_feature(data):
    x_ref, pool = data
    plain = shifted_window(pool, 300, 2, seed=1)
    moved = shifted_window(pool, 300, 2, shift=1.5, x_ref=x_ref, seed=1)
    assert np.allclose(np.delete(moved, 2, axis=1), np.delete(plain, 2, axis=1))
    assert np.allclose(moved[:, 2] - plain[:, 2], 1.5 * x_ref[:, 2].std())
    wide = shifted_window(pool, 300, 2, scale=2.0, seed=1)
    assert wide[:, 2].std() == pytest.approx(2 * plain[:, 2].std())
    with pytest.raises(ValueError, match="feature an index"):
        shifted_window(pool, 10, 7)


def test_explorer_verdict_follows_the_sliders(data):
    x_ref, pool = data
    box = drift_explorer(ks_detect(x_ref), x_ref, pool, list("abcde"), feature=1)
    assert "no drift" in box.readout.value
    box.shift.value = 1.5
    assert ">drift<" in box.readout.value and "p-value of b" in box.readout.value
    box.shift.value = 0.0
    box.scale.value = 2.5
    assert ">drift<" in box.readout.value
    box.scale.value = 1.0
    box.feature.value = 3
    assert "no drift" in box.readout.value and "p-value of d" in box.readout.value


def test_explorer_refuses_names_that_do_not_fit(data):
    x_ref, pool = data
    with pytest.raises(ValueError, match="3 feature names for 5 features"):
        drift_explorer(ks_detect(x_ref), x_ref, pool, ["a", "b", "c"])
