"""labkit.widgets.attack_explorer: the slider over an attack's budget."""

import matplotlib
import numpy as np
import pytest

from labkit.widgets import attack_explorer

matplotlib.use("Agg")


def predict_proba(rows):
    """Two classes by total ink: above 32 of 64 pixels is class 1."""
    ink = np.asarray(rows).sum(axis=1)
    p1 = 1 / (1 + np.exp(-(ink - 32)))
    return np.c_[1 - p1, p1]


def brighten(x, y, epsilon):
    """An 'attack' that adds epsilon to every pixel, pushing class 0 towards class 1."""
    return np.clip(x + epsilon, 0, 1)


def test_the_readout_and_the_attacked_images_follow_the_budget():
    images = np.full((4, 64), 0.45)  # 28.8 of ink: class 0, until epsilon passes about 0.05
    calls = []

    def attack(x, y, epsilon):
        calls.append(epsilon)
        return brighten(x, y, epsilon)

    box = attack_explorer(images, np.zeros(4, dtype=int), attack, predict_proba,
                          score=lambda rows: np.asarray(rows).mean(axis=1), threshold=0.5)
    assert len(calls) == 16 and calls[0] == 0.0 and calls[-1] == pytest.approx(0.3)  # attacked once per budget
    assert "<b>0 of 4</b> images misread" in box.readout.value and "<b>0</b> flagged" in box.readout.value
    box.slider.value = 0.1
    assert "<b>4 of 4</b> images misread" in box.readout.value and "<b>4</b> flagged" in box.readout.value
    assert len(calls) == 16  # moving the slider runs no attack


def test_it_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="one label per row"):
        attack_explorer(np.zeros((3, 64)), [0, 1], brighten, predict_proba)
