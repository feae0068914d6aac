"""Checks of lab 08, "Detect attacks"."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from labkit.adversarial import DenseNet, fgsm as reference_fgsm, load_dense, numeric_gradient, pgd as reference_pgd
from labkit.checks import (
    Fail, expect_function, finite_scores, model_folder_repository, register, roc_auc, safe_repr, serve_for_check,
    server_error_reason,
)
from labkit.data import load_digits

# The hidden models are tf.keras models. Import TensorFlow with the checks (the grader loads them before it runs
# any student code), never inside a check's time limit: an import cut short leaves tf_keras half-initialised.
import tensorflow  # noqa: E402, F401, I001


IGNORED_PIXELS = 8  # pixels each hidden model ignores (zero weights), as a trained one nearly does the blank border


def _hidden_model(rng: np.random.Generator):
    """A hidden classifier of 64 pixels (tf.keras, Dense layers only), the same network in numpy, its number of
    classes, and a mask of the pixels it ignores: their weights are 0, so the loss's gradient there is exactly 0."""
    from labkit.adversarial import keras_model

    sizes = [64, int(rng.integers(24, 48)), int(rng.integers(16, 32)), int(rng.choice([8, 10]))]
    activation = str(rng.choice(["relu", "tanh"]))
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        last = i == len(sizes) - 2
        scale = (2.0 if last else 1.5) / math.sqrt(n_in)
        layers.append((rng.normal(0, scale, (n_in, n_out)).astype(np.float32),
                       rng.normal(0, 0.1, n_out).astype(np.float32), "softmax" if last else activation))
    ink = load_digits("train").X.mean(axis=0)
    ignored = np.zeros(64, dtype=bool)  # among the pixels with ink on some digits and not on others
    ignored[rng.choice(np.flatnonzero((ink > 0.25) & (ink < 0.75)), size=IGNORED_PIXELS, replace=False)] = True
    layers[0][0][ignored] = 0
    return keras_model(layers), DenseNet(layers), sizes[-1], ignored


def _hidden_digits(rng: np.random.Generator, n: int, n_classes: int):
    test = load_digits("test")
    chosen = rng.choice(len(test), size=n, replace=False)
    return test.X[chosen].astype(np.float32), rng.integers(0, n_classes, size=n).astype(np.int64)


def _images(value, shape, call: str) -> np.ndarray:
    """``value`` as a finite float array of ``shape``, or a ``Fail`` that says what came back."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Fail(f"{call} returned {safe_repr(value)}; return the adversarial images as an array.") from None
    if array.shape != shape:
        raise Fail(f"{call} returned shape {array.shape}; expected {shape}, one adversarial image per input.")
    if not np.isfinite(array).all():
        raise Fail(f"{call} returned NaN or infinite pixels.")
    return array


def _within_budget(x: np.ndarray, adv: np.ndarray, epsilon: float, call: str) -> None:
    change = float(np.abs(adv - x).max())
    if change > epsilon + 1e-5:
        raise Fail(f"{call} changes a pixel by {change:.3f}, more than the budget epsilon={epsilon}: an attack "
                   "within an L-infinity budget changes no pixel by more than epsilon (project onto the ball "
                   "around the original image, not around the last step).")
    low, high = float(adv.min()), float(adv.max())
    if low < -1e-6 or high > 1 + 1e-6:
        raise Fail(f"{call} returns pixels from {low:.3f} to {high:.3f}; valid pixels are in [0, 1]: clip "
                   "the adversarial image.")


# -- exercise 1: FGSM --------------------------------------------------------------------------------


@register(
    "08.fgsm",
    points=2,
    title="The fast gradient sign method",
    hints=(
        "FGSM takes one step in the direction that raises the classifier's loss fastest, the same size for "
        "every pixel: the sign of the loss's gradient with respect to the input, not with respect to the "
        "weights.",
        "The result must stay within epsilon of the original in every pixel and inside the valid pixel range; "
        "random noise of the same size does not raise the loss the same way.",
        "Watch x in a tf.GradientTape, compute the cross-entropy of model(x) against the true labels y, take "
        "the gradient of the loss with respect to x, and return clip(x + epsilon * sign(gradient), 0, 1).",
    ),
)
def fgsm(answer, rng):
    expect_function(answer, "fgsm", "a model, images, labels and epsilon")
    for _ in range(3):
        model, net, n_classes, ignored = _hidden_model(rng)
        x, y = _hidden_digits(rng, 100, n_classes)
        epsilon = float(rng.choice([0.05, 0.1, 0.2]))
        call = f"fgsm(<hidden model>, <100 images>, <labels>, epsilon={epsilon})"
        adv = _images(answer(model, x.copy(), y.copy(), epsilon), x.shape, call)
        _within_budget(x, adv, epsilon, call)
        if net.loss(adv, y).mean() <= net.loss(x, y).mean():
            raise Fail(f"{call} lowers the model's loss on the true labels: an attack steps *up* the gradient "
                       "of the loss, x + epsilon * sign(gradient).")
        if np.abs(adv - x)[:, ignored].max() > 1e-6:
            raise Fail(f"{call} moves pixels that the model ignores: the loss's gradient there is exactly 0, and "
                       "so is its sign; FGSM leaves those pixels as they are.")
        gradient = net.loss_gradient(x, y)
        reference = reference_fgsm(net.loss_gradient, x, y, epsilon)
        clear = np.abs(gradient) > 1e-6 * np.abs(gradient).max()  # a sign lost in rounding decides nothing
        same = float((np.abs(adv - reference) <= 1e-4)[clear].mean())
        if same < 0.99:
            raise Fail(f"{call}: only {same:.0%} of the pixels equal FGSM's result on these inputs. Each pixel "
                       "moves by exactly epsilon in the direction of the sign of the loss gradient with respect "
                       "to the input (for the true labels y), then is clipped to [0, 1]; random or scaled "
                       "steps are not FGSM.")
    return "Equal to the reference FGSM on 3 hidden models and inputs, within budget and pixel range."


# -- exercise 2: PGD ---------------------------------------------------------------------------------


@register(
    "08.pgd",
    points=2,
    title="Projected gradient descent with a random start",
    hints=(
        "PGD is FGSM repeated in small steps: after each step, pull the image back into the epsilon box "
        "around the ORIGINAL image, not around the previous step, and into the valid pixel range.",
        "Begin from a random point inside the box, so that the attack does not start where the gradient is "
        "flat; use the step size and the number of steps the function is given.",
        "Start at x plus uniform noise in [-epsilon, epsilon] (clipped to [0, 1]); then `steps` times: step "
        "by step_size * sign(gradient of the loss), project back into [x - epsilon, x + epsilon] around the "
        "original x, and clip to [0, 1].",
    ),
    time_limit=20,
)
def pgd(answer, rng):
    expect_function(answer, "pgd", "a model, images, labels, epsilon, step_size, steps and a seed")
    for case in range(2):
        model, net, n_classes, ignored = _hidden_model(rng)
        x, y = _hidden_digits(rng, 100, n_classes)
        if case == 1:
            x = x.astype(np.float64)  # images may come as float64 too
        epsilon = float(rng.choice([0.2, 0.3]))
        step_size, steps, seed = epsilon / 4, 20, int(rng.integers(2**31))
        call = f"pgd(<hidden model>, <100 images>, <labels>, epsilon={epsilon}, step_size={step_size}, steps=20)"
        adv = _images(answer(model, x.copy(), y.copy(), epsilon, step_size, steps, seed), x.shape, call)
        _within_budget(x, adv, epsilon, call)
        loss = float(net.loss(adv, y).mean())
        one_step = float(net.loss(reference_fgsm(net.loss_gradient, x, y, epsilon), y).mean())
        best = float(net.loss(reference_pgd(net.loss_gradient, x, y, epsilon, step_size, steps, rng), y).mean())
        clean = float(net.loss(x, y).mean())
        if loss <= clean:
            raise Fail(f"{call} lowers the model's loss on the true labels: step *up* the gradient of the loss.")
        if loss < one_step + 0.5 * (best - one_step):
            raise Fail(f"{call} raises the mean loss from {clean:.2f} to {loss:.2f}; PGD reaches about {best:.2f} "
                       f"here and a single FGSM step {one_step:.2f}. Take all the steps, each from the last "
                       "adversarial image, following the sign of the gradient there.")
        same = _images(answer(model, x.copy(), y.copy(), epsilon, step_size, steps, seed), x.shape, call)
        if not np.allclose(same, adv, rtol=0, atol=1e-6):
            raise Fail(f"{call} gives other images when called again with the same seed={seed}: draw the random "
                       "start from np.random.default_rng(seed), so that a seed gives the same attack every time.")
        again = _images(answer(model, x.copy(), y.copy(), epsilon, step_size, steps, seed + 1), x.shape, call)
        if np.array_equal(again, adv):
            raise Fail(f"{call} gives the same images for two different seeds: start from a random point of the "
                       "epsilon-ball around x (uniform noise), drawn from the seed.")
        # the pixels the model ignores never move after the random start: uniform around x, on both sides
        inside = ignored[None, :] & (x > epsilon) & (x < 1 - epsilon)
        start = (adv - x)[inside] / epsilon
        if len(start) >= 20 and (np.mean(start > 0.999) > 0.5 or np.mean(start < -0.999) > 0.5
                                 or not 0.2 < np.mean(start > 0) < 0.8):
            raise Fail(f"{call}: the pixels that the model ignores (their gradient is exactly 0) end at "
                       f"{np.mean(start > 0):.0%} above and {np.mean(start < 0):.0%} below the original; they "
                       "should keep their random start, uniform in [-epsilon, epsilon] around x: sign(0) = 0, so "
                       "no step moves them.")
        start_only = _images(answer(model, x.copy(), y.copy(), epsilon, step_size, 0, seed), x.shape,
                             call.replace("steps=20", "steps=0"))
        _within_budget(x, start_only, epsilon, call.replace("steps=20", "steps=0"))
    return ("Within budget and pixel range, as strong as the reference PGD, the same images for the same seed and "
            "others for another, on 2 hidden models and inputs.")


# -- exercise 3: the adversarial score ---------------------------------------------------------------

# ROC AUC each attack needs: the lab's KL autoencoder reaches 0.93-0.97 on FGSM and PGD (a plain autoencoder's
# reconstruction error about 0.65) and 0.74-0.86 on confident mistakes (the classifier's uncertainty about 0.5)
SCORE_FLOORS = {"FGSM": 0.8, "PGD": 0.8, "confident PGD": 0.65}
CLIP = 1e-10  # the exercise: clip both probability vectors to at least 1e-10
# a score equals the reference within this: float32 arithmetic stays far inside it, a clip at 1.5e-10 does not
SCORE_RTOL, SCORE_ATOL = 1e-3, 1e-6


def _kl(p: np.ndarray, q: np.ndarray, clip: float = CLIP) -> np.ndarray:
    """KL(p || q) per row, both clipped to at least ``clip``: the exercise's score."""
    p, q = np.clip(p, clip, 1), np.clip(q, clip, 1)
    return (p * np.log(p / q)).sum(axis=1)


# scores that students write instead, to name the mistake in the message (p on the row, q on its reconstruction)
_OTHER_SCORES = {
    "KL(q || p), the divergence the other way round: p is the prediction on the row itself": lambda p, q: _kl(q, p),
    "the total variation distance, not the KL divergence": lambda p, q: 0.5 * np.abs(p - q).sum(axis=1),
    "the Jensen-Shannon divergence, not the KL divergence": lambda p, q: 0.5 * _kl(p, (p + q) / 2)
    + 0.5 * _kl(q, (p + q) / 2),
    "KL(p || q) + KL(q || p), not KL(p || q)": lambda p, q: _kl(p, q) + _kl(q, p),
    "KL(p || q) clipped at 1e-7 (Keras's KLDivergence), not at 1e-10": lambda p, q: _kl(p, q, 1e-7),
    "KL(p || q) without clipping": lambda p, q: _kl(p, q, 1e-300),
}


def _probabilities(predict_proba, rows: np.ndarray, call: str) -> np.ndarray:
    p = np.asarray(predict_proba(rows.astype(np.float32)), dtype=np.float64)
    if p.ndim != 2 or len(p) != len(rows) or not np.isfinite(p).all():
        raise Fail(f"{call} should return one row of class probabilities per image, got shape {p.shape}.")
    return p


def _reconstructions(reconstruct, rows: np.ndarray) -> np.ndarray:
    r = np.asarray(reconstruct(rows.astype(np.float32)), dtype=np.float64)
    if r.shape != rows.shape or not np.isfinite(r).all():
        raise Fail(f"reconstruct(<{len(rows)} rows>) should return one reconstructed row of {rows.shape[1]} pixels "
                   f"per row, got shape {r.shape}.")
    return r


def _attacks(predict_proba, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """Attacks on the student's classifier, crafted by finite differences through its predictions, one at a time
    (name, the adversarial examples that fool it): FGSM, PGD, and a targeted PGD that pushes on to a confident
    mistake."""
    def gradient(rows, labels):
        return numeric_gradient(predict_proba, rows, labels)

    n_classes = _probabilities(predict_proba, x[:1], "predict_proba(<1 image>)").shape[1]
    target = (y + rng.integers(1, n_classes, size=len(y))) % n_classes
    attacks = {"FGSM": lambda: reference_fgsm(gradient, x, y, 0.1),
               "PGD": lambda: reference_pgd(gradient, x, y, 0.1, 0.025, 8, rng),
               "confident PGD": lambda: reference_pgd(gradient, x, y, 0.3, 0.05, 20, rng, target=target)}
    for name, attack in attacks.items():
        adv = attack()
        predicted = _probabilities(predict_proba, adv, "predict_proba(<images>)").argmax(axis=1)
        yield name, adv[predicted != y]


def _disagreements(predict_proba, reconstruct, x: np.ndarray, y: np.ndarray, rng: np.random.Generator):
    """Rows on which the classifier gives a class a high probability and the reconstruction almost none, the
    largest scores there are: a search, by finite differences through both functions, that raises
    log p[t] - log q[t] for a random other class t. There q[t] falls below the clip of 1e-10."""
    def on_reconstruction(rows):
        return predict_proba(_reconstructions(reconstruct, np.asarray(rows, np.float32)).astype(np.float32))

    n_classes = _probabilities(predict_proba, x[:1], "predict_proba(<1 image>)").shape[1]
    target = (y + rng.integers(1, n_classes, size=len(y))) % n_classes
    rows = np.asarray(x, np.float64)
    for _ in range(40):
        rise = numeric_gradient(on_reconstruction, rows, target) - numeric_gradient(predict_proba, rows, target)
        rows = np.clip(rows + 0.05 * np.sign(rise), 0, 1)
    return rows


@register(
    "08.adversarial_score",
    points=3,
    title="An adversarial score from matching prediction distributions",
    hints=(
        "An attack changes the classifier's answer more than it changes the pixels, so compare what the "
        "classifier says about a row with what it says about the autoencoder's reconstruction of it, not the "
        "pixels themselves.",
        "Use the KL divergence between two probability distributions over the classes, in the order the "
        "exercise gives: the prediction on the row first. Guard the logarithm against probabilities of zero.",
        "Score a row by the KL divergence between the classifier's probabilities on the row, p, and on the "
        "autoencoder's reconstruction of it, q: sum over classes of p * log(p / q). Clip both to at least 1e-10.",
    ),
    time_limit=30,  # the attacks call the classifier a few dozen times
)
def adversarial_score(answer, rng):
    if not isinstance(answer, tuple | list) or len(answer) != 3:
        raise Fail(f"Pass the three functions (predict_proba, reconstruct, adversarial_score), not "
                   f"{safe_repr(answer)}.")
    predict_proba, reconstruct, score = answer
    expect_function(predict_proba, "predict_proba", "rows of 64 pixels")
    expect_function(reconstruct, "reconstruct", "rows of 64 pixels")
    expect_function(score, "adversarial_score", "rows of 64 pixels")
    test = load_digits("test")
    chosen = rng.choice(len(test), size=120, replace=False)
    x, y = test.X[chosen].astype(np.float32), test.labels[chosen]
    right = _probabilities(predict_proba, x, "predict_proba(<120 images>)").argmax(axis=1) == y
    x, y = x[right], y[right]
    call = "adversarial_score(<rows>)"
    clean = finite_scores(score(x.copy()), len(x), call)
    again = finite_scores(score(x[:40].copy()), 40, call)
    if not np.allclose(again, clean[:40], rtol=1e-4, atol=1e-7):
        raise Fail("adversarial_score gives different scores for the same rows on a second call; a threshold "
                   "needs the same score every time.")
    attacks = [(name, adv) for name, adv in _attacks(predict_proba, x, y, rng)]
    found = _disagreements(predict_proba, reconstruct, x[:24], y[:24], rng)
    rows = np.concatenate([x] + [adv for _, adv in attacks] + [found]).astype(np.float32)
    scores = finite_scores(score(rows.copy()), len(rows), call)
    p = _probabilities(predict_proba, rows, "predict_proba(<rows>)")
    q = _probabilities(predict_proba, _reconstructions(reconstruct, rows).astype(np.float32),
                       "predict_proba(reconstruct(<rows>))")
    reference = _kl(p, q)
    wrong = ~np.isclose(scores, reference, rtol=SCORE_RTOL, atol=SCORE_ATOL)
    if wrong.any():
        worst = int(np.argmax(np.abs(scores - reference) / (SCORE_ATOL + SCORE_RTOL * np.abs(reference))))
        named = next((what for what, other in _OTHER_SCORES.items()
                      if np.isclose(scores, other(p, q), rtol=SCORE_RTOL, atol=SCORE_ATOL).all()), None)
        raise Fail(f"Your scores differ from the KL divergence of the exercise on {int(wrong.sum())} of "
                   f"{len(rows)} hidden rows (clean digits, adversarial examples, and rows on which the classifier "
                   f"and the reconstruction disagree most): on one row you give {scores[worst]:.4g}, and "
                   f"KL(p || q) = {reference[worst]:.4g}, with p = predict_proba(row), q = "
                   f"predict_proba(reconstruct(row)), both clipped to at least 1e-10."
                   + (f" Yours is {named}." if named else ""))
    results = []
    start = len(x)
    for name, adv in attacks:
        attacked, start = scores[start:start + len(adv)], start + len(adv)
        if len(adv) < 10:
            continue  # the classifier resisted this attack; nothing to detect
        auc = roc_auc(clean, attacked)
        if auc < SCORE_FLOORS[name]:
            raise Fail(f"Your scores are the KL divergence, and they separate hidden clean digits from {len(adv)} "
                       f"hidden {name} adversarial examples with ROC AUC {auc:.2f} only; the KL score of the lab's "
                       f"trained autoencoder reaches at least {SCORE_FLOORS[name]}. Pass the classifier and the "
                       "autoencoder trained to match its predictions.")
        results.append(f"{name} {auc:.2f}")
    if not results:
        raise Fail("The classifier resisted every hidden attack, so there was nothing to detect: pass the lab's "
                   "classifier's predict_proba.")
    return (f"Equal to KL(p || q) on {len(rows)} hidden rows; ROC AUC on hidden clean digits against hidden "
            f"adversarial examples: {', '.join(results)}.")


# -- exercise 4: a threshold for a target false positive rate ---------------------------------------


def _score_sampler(rng: np.random.Generator):
    """Clean scores like a KL score's: skewed, heavy-tailed, often with a point mass at zero."""
    kind = str(rng.choice(["lognormal", "gamma", "mixture"]))
    zeros = float(rng.uniform(0, 0.3))
    sigma, shape, scale = float(rng.uniform(0.8, 2)), float(rng.uniform(0.3, 2)), float(rng.uniform(1e-3, 1))

    def sample(n: int) -> np.ndarray:
        if kind == "lognormal":
            values = scale * rng.lognormal(0, sigma, n)
        elif kind == "gamma":
            values = rng.gamma(shape, scale, n)
        else:
            values = np.where(rng.random(n) < 0.8, rng.gamma(shape, scale, n), scale * rng.pareto(1.5, n) * 5)
        return np.where(rng.random(n) < zeros, 0.0, values)

    return sample


@register(
    "08.threshold",
    points=2,
    title="A threshold for a target false positive rate",
    hints=(
        "A false positive is a clean row flagged as attacked: the threshold decides what share of the clean "
        "scores lies above it.",
        "Set it from the clean scores you are given, held out from training, by a quantile rather than by a "
        "fixed number or a formula that assumes a bell curve.",
        "A clean row is flagged when its score is above the threshold, so put the threshold at the (1 - fpr) "
        "quantile of the clean scores: np.quantile(clean_scores, 1 - fpr). Scores are skewed: no formula with "
        "the mean and the standard deviation gets the rate right.",
    ),
)
def threshold(answer, rng):
    expect_function(answer, "threshold_for_fpr", "clean scores and a false positive rate")
    for _ in range(5):
        sample = _score_sampler(rng)
        fpr = float(rng.choice([0.01, 0.02, 0.05, 0.1]))
        n = int(rng.integers(1500, 3000))
        call = f"threshold_for_fpr(<{n} clean scores>, fpr={fpr})"
        got = answer(sample(n), fpr)
        try:
            value = float(got)
        except (TypeError, ValueError):
            raise Fail(f"{call} returned {safe_repr(got)}, not a number.") from None
        if math.isnan(value):
            raise Fail(f"{call} returned NaN; return a threshold.")
        held_out = sample(20000)
        rate = float((held_out > value).mean())
        tolerance = 4 * math.sqrt(fpr * (1 - fpr) * (1 / n + 1 / 20000)) + 0.002
        if abs(rate - fpr) > tolerance:
            raise Fail(f"{call}: the threshold {value:.4g} flags {rate:.1%} of 20,000 held-out clean scores from "
                       f"the same source; it should flag about {fpr:.0%}. A row is flagged when its score is "
                       "above the threshold; set it from the scores' own distribution.")
    return "The false positive rate on held-out clean scores is right, within sampling error, on 5 hidden sources."


# -- exercise 5: the defended endpoint ---------------------------------------------------------------


EPSILON, RECALL_FLOOR = 0.1, 0.45
# The exercise sets the threshold for a 5 % false positive rate on the clean digits held out from training (the
# lab's calibration half, about 230 digits). A right threshold flags about 5 % of hidden clean digits; the check
# allows three standard errors of the two samples: the calibration digits and the hidden ones.
TARGET_FPR, CALIBRATION_ROWS, N_CLEAN = 0.05, 200, 220


def _false_alarm_bound(n_clean: int) -> float:
    """The largest share of ``n_clean`` hidden clean rows that a threshold set at 5 % on about 200 clean scores
    flags, within three standard errors of both samples: 11.4 % of 220 rows."""
    return TARGET_FPR + 3 * math.sqrt(TARGET_FPR * (1 - TARGET_FPR) * (1 / n_clean + 1 / CALIBRATION_ROWS))


def _bad_requests() -> dict[str, dict]:
    def request(shape, datatype, data):
        return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}

    return {"32 pixels per row": request([2, 32], "FP32", [0.5] * 64),
            "a NaN pixel": request([1, 64], "FP64", ["NaN"] + [0.0] * 63),
            "a pixel of 5": request([1, 64], "FP32", [5.0] + [0.0] * 63),
            "text": request([1], "BYTES", ["a digit"])}


def guard_rows(net: DenseNet, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hidden rows that 08.runtime sends: ``N_CLEAN`` clean test digits that ``net`` gets right, their labels,
    and PGD adversarial examples (epsilon ``EPSILON``) crafted on ``net`` from the others, those that fool it."""
    test = load_digits("test")
    chosen = rng.permutation(len(test))
    x, y = test.X[chosen].astype(np.float64), test.labels[chosen]
    right = net.predict_proba(x).argmax(axis=1) == y
    x, y = x[right], y[right]
    clean, attacked = x[:N_CLEAN], x[N_CLEAN:]
    adv = reference_pgd(net.loss_gradient, attacked, y[N_CLEAN:], EPSILON, EPSILON / 4, 10, rng)
    return clean, y[:N_CLEAN], adv[net.predict_proba(adv).argmax(axis=1) != y[N_CLEAN:]]  # the attacks that work


@register(
    "08.runtime",
    points=3,
    title="A served classifier that flags and corrects adversarial inputs",
    hints=(
        "MLServer loads everything the runtime needs from the model's folder: the runtime file, the "
        "classifier's and the detector's weights, and the settings that name them.",
        "Each prediction comes back with the score, the flag (score above the threshold set on clean data) "
        "and the corrected prediction; a malformed request gets a 400 that says what was expected.",
        "The folder needs attack_guard.py, classifier.npz and detector.npz (save_dense), and a "
        "model-settings.json whose implementation is attack_guard.AttackGuard, whose parameters.uri is "
        "./classifier.npz and whose parameters.extra.threshold is the threshold set on clean scores.",
    ),
    time_limit=30,  # it starts an MLServer, 3 s on a quiet laptop, far more on a busy one
)
def runtime(answer, rng):
    import httpx

    from labkit.client import Client, InferenceServerError, infer_path

    if not isinstance(answer, str | os.PathLike):
        raise Fail(f"Pass the model folder's path as a string, not {safe_repr(answer)}.")
    try:
        folder = Path(answer).resolve()
        settings_path = folder / "model-settings.json"
        found = settings_path.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise Fail(f"{safe_repr(str(answer))} is not a model folder: it should contain model-settings.json.")
    try:
        settings = json.loads(settings_path.read_text())
        name = str(settings.get("name") or folder.name)
    except (OSError, ValueError, AttributeError) as e:
        raise Fail(f"{settings_path} is not a valid JSON object: {e}") from None
    try:
        net = DenseNet(load_dense(folder / "classifier.npz"))
    except (OSError, ValueError, KeyError) as e:
        raise Fail(f"classifier.npz in your folder is not a dense classifier saved with save_dense: {e}") from None

    clean, y, adv = guard_rows(net, rng)
    rows = np.concatenate([clean, adv]).astype(np.float32)
    order = rng.permutation(len(rows))
    with serve_for_check(model_folder_repository(folder), timeout=8) as server, Client(server, "rest") as client:
        if not client.model_ready(name):
            raise Fail(f"MLServer could not load the model {name!r} from your folder: "
                       f"{server_error_reason(server.logs(200))}")
        try:
            served = client.predict(name, rows[order])
        except InferenceServerError as e:
            raise Fail(f"The server refused a request of {len(rows)} rows of 64 FP32 pixels: {e}") from None
        refused = {}
        with httpx.Client(base_url=server.url, timeout=10, trust_env=False) as http:
            for what, body in _bad_requests().items():
                refused[what] = http.post(infer_path(name), json=body).status_code
        alive = client.model_ready(name)
    missing = {"predict", "adversarial_score", "is_adversarial", "corrected"} - set(served)
    if missing:
        raise Fail(f"The response lacks the outputs {sorted(missing)}; serve it with the attack_guard runtime.")
    wrong = {what: status for what, status in refused.items() if status != 400}
    if wrong:
        raise Fail(f"Malformed requests must get a 400; these got another status: {wrong}.")
    if not alive:
        raise Fail("The model was no longer ready after the malformed requests.")
    back = np.empty(len(rows), dtype=int)
    back[order] = np.arange(len(rows))
    flags = np.asarray(served["is_adversarial"]).reshape(-1)[back].astype(bool)
    predicted = np.asarray(served["predict"]).reshape(-1)[back]
    n_clean = len(clean)
    false_alarms, recall = float(flags[:n_clean].mean()), float(flags[n_clean:].mean())
    if float((predicted[:n_clean] == y[:n_clean]).mean()) < 0.9:
        raise Fail("The served classifier gets hidden clean digits wrong that classifier.npz gets right: is "
                   "classifier.npz the classifier the server runs?")
    bound = _false_alarm_bound(n_clean)
    if false_alarms > bound:
        raise Fail(f"The server flags {false_alarms:.1%} of {n_clean} hidden clean test digits as adversarial; the "
                   f"exercise asks for 5 %, and a threshold set at 5 % on about {CALIBRATION_ROWS} clean scores "
                   f"flags at most {bound:.1%} of {n_clean} (three standard errors of both samples). Set "
                   "parameters.extra.threshold at the 0.95 quantile of the scores of clean digits held out from "
                   "training (the calibration half), not of the training digits.")
    if recall < RECALL_FLOOR:
        raise Fail(f"The server flags only {recall:.0%} of {len(adv)} hidden PGD adversarial examples (epsilon "
                   f"{EPSILON}); the lab's detector flags about 60 % at a 5 % false positive rate. Is the "
                   "threshold too high, or is detector.npz not the autoencoder trained to match the classifier's "
                   "predictions?")
    return (f"Served on a fresh MLServer: {false_alarms:.1%} of {n_clean} hidden clean digits flagged (at most "
            f"{bound:.1%} for a 5 % threshold), {recall:.0%} of "
            f"{len(adv)} hidden adversarial examples flagged, 4 malformed requests refused with a 400, and the "
            "model still ready.")
