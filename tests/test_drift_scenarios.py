"""labkit.data.drift_scenario: seeded, documented mechanisms that do what their cards say."""

import numpy as np
import pytest
from scipy import stats

from labkit.data import DRIFT_KINDS, DRIFT_PARAMETERS, drift_scenario

TEXTURE = ["mean texture", "texture error", "worst texture"]


def column(scenario, name):
    return scenario.X[:, scenario.feature_names.index(name)]


@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_seeded_shapes_parameters_and_description(kind):
    a, b = drift_scenario(kind, 150, seed=3), drift_scenario(kind, 150, seed=3)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.X, drift_scenario(kind, 150, seed=4).X)
    assert a.X.shape == (150, 30) and a.y.shape == (150,) and set(np.unique(a.y)) <= {0, 1}
    assert set(a.params) == set(DRIFT_PARAMETERS[kind])
    assert a.description and "{" not in a.description
    assert kind in repr(a) and a.drift_type in {"none", "covariate", "label", "concept"}


def test_no_drift_windows_pass_a_ks_test_at_its_level():
    p = np.array([stats.ks_2samp(drift_scenario("none", 200, seed=100 + i).X,
                                 drift_scenario("none", 100, seed=500 + i).X, axis=0).pvalue for i in range(60)])
    assert 0.02 < (p < 0.05).mean() < 0.08  # each feature's test holds its level: 1800 tests


def test_instrument_scales_only_its_features_and_keeps_labels():
    base = drift_scenario("none", 400, seed=1)
    shifted = drift_scenario("instrument", 400, seed=1, scale=1.5)
    for name in TEXTURE:
        assert np.allclose(column(shifted, name), 1.5 * column(base, name))
    assert np.allclose(column(shifted, "mean radius"), column(base, "mean radius"))
    assert np.array_equal(shifted.y, base.y)
    offset = drift_scenario("instrument", 400, seed=1, features=["mean radius"], scale=1.0, offset=2.0)
    assert np.mean(column(offset, "mean radius") - column(base, "mean radius")) > 5  # 2 sd of about 3.5


def test_population_sets_the_share_of_malignant_tumours():
    assert np.mean(drift_scenario("population", 4000, seed=2, malignant=0.8).y == 0) == pytest.approx(0.8, abs=0.03)
    assert np.mean(drift_scenario("population", 4000, seed=2, malignant=0.1).y == 0) == pytest.approx(0.1, abs=0.03)


def test_gradual_drift_starts_and_ends_where_it_says():
    base = drift_scenario("none", 1000, seed=5)
    gradual = drift_scenario("gradual", 1000, seed=5, scale=2.0, start=0.2, end=0.6)
    ratio = column(gradual, "mean texture") / column(base, "mean texture")
    assert np.allclose(ratio[:200], 1) and np.allclose(ratio[600:], 2)
    assert np.all(np.diff(ratio[200:600]) > 0)


def test_concept_drift_changes_labels_not_inputs():
    base, concept = drift_scenario("none", 500, seed=6), drift_scenario("concept", 500, seed=6)
    assert np.array_equal(base.X, concept.X)
    flipped = base.y != concept.y
    assert flipped.any() and np.all(base.y[flipped] == 1) and np.all(concept.y[flipped] == 0)
    area = column(base, "worst area")
    assert area[flipped].min() > np.median(area[base.y == 1])  # only large benign tumours are relabelled


@pytest.mark.parametrize("call, words", [
    (lambda: drift_scenario("sudden"), "unknown drift kind"),
    (lambda: drift_scenario("population", scale=2), "takes no parameter scale"),
    (lambda: drift_scenario("population", malignant=1.5), "between 0 and 1"),
    (lambda: drift_scenario("instrument", features=["colour"]), "unknown feature"),
    (lambda: drift_scenario("none", size=0), "positive number of rows"),
])
def test_bad_arguments_say_what_is_accepted(call, words):
    with pytest.raises(ValueError, match=words):
        call()


def test_shared_population_cannot_be_changed_through_a_scenario():
    scenario = drift_scenario("none", 10, seed=0)
    scenario.X[:] = -1
    assert (drift_scenario("none", 10, seed=0).X > 0).any()


def test_referral_selects_on_the_reading_and_keeps_each_tumours_label():
    base = drift_scenario("none", 3000, seed=7)
    referred = drift_scenario("referral", 3000, seed=7, feature="worst area", quantile=0.4)
    population = drift_scenario("none", 20000, seed=8)
    cut = np.quantile(column(population, "worst area"), 0.4)
    assert column(referred, "worst area").min() > cut * 0.95  # measured above the cut (2 % noise on the cut)
    assert np.mean(referred.y == 0) > np.mean(base.y == 0) + 0.1  # more malignant: larger tumours
    # P(y | x) stays: among tumours of the same size, the same share is malignant
    for low, high in [(900, 1200), (1200, 1600)]:
        share = [np.mean(s.y[(column(s, "worst area") > low) & (column(s, "worst area") <= high)] == 0)
                 for s in (base, referred)]
        assert share[0] == pytest.approx(share[1], abs=0.08)
