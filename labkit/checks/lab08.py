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


def _hidden_model(rng: np.random.Generator):
    """A hidden classifier of 64 pixels (tf.keras, Dense layers only) and the same network in numpy."""
    from labkit.adversarial import keras_model

    sizes = [64, int(rng.integers(24, 48)), int(rng.integers(16, 32)), int(rng.choice([8, 10]))]
    activation = str(rng.choice(["relu", "tanh"]))
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        last = i == len(sizes) - 2
        scale = (2.0 if last else 1.5) / math.sqrt(n_in)
        layers.append((rng.normal(0, scale, (n_in, n_out)).astype(np.float32),
                       rng.normal(0, 0.1, n_out).astype(np.float32), "softmax" if last else activation))
    return keras_model(layers), DenseNet(layers), sizes[-1]


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
        model, net, n_classes = _hidden_model(rng)
        x, y = _hidden_digits(rng, 100, n_classes)
        epsilon = float(rng.choice([0.05, 0.1, 0.2]))
        call = f"fgsm(<hidden model>, <100 images>, <labels>, epsilon={epsilon})"
        adv = _images(answer(model, x.copy(), y.copy(), epsilon), x.shape, call)
        _within_budget(x, adv, epsilon, call)
        if net.loss(adv, y).mean() <= net.loss(x, y).mean():
            raise Fail(f"{call} lowers the model's loss on the true labels: an attack steps *up* the gradient "
                       "of the loss, x + epsilon * sign(gradient).")
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
    for _ in range(2):
        model, net, n_classes = _hidden_model(rng)
        x, y = _hidden_digits(rng, 100, n_classes)
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
        again = _images(answer(model, x.copy(), y.copy(), epsilon, step_size, steps, seed + 1), x.shape, call)
        if np.array_equal(again, adv):
            raise Fail(f"{call} gives the same images for two different seeds: start from a random point of the "
                       "epsilon-ball around x (uniform noise), drawn from the seed.")
    return "Within budget and pixel range, and as strong as the reference PGD, on 2 hidden models and inputs."


# -- exercise 3: the adversarial score ---------------------------------------------------------------

# ROC AUC each attack needs: the lab's KL autoencoder reaches 0.93-0.97 on FGSM and PGD (a plain autoencoder's
# reconstruction error about 0.65) and 0.74-0.86 on confident mistakes (the classifier's uncertainty about 0.5)
SCORE_FLOORS = {"FGSM": 0.8, "PGD": 0.8, "confident PGD": 0.65}




def _probabilities(predict_proba, rows: np.ndarray, call: str) -> np.ndarray:
    p = np.asarray(predict_proba(rows.astype(np.float32)), dtype=np.float64)
    if p.ndim != 2 or len(p) != len(rows) or not np.isfinite(p).all():
        raise Fail(f"{call} should return one row of class probabilities per image, got shape {p.shape}.")
    return p


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


@register(
    "08.adversarial_score",
    points=3,
    title="An adversarial score from matching prediction distributions",
    hints=(
        "An attack changes the classifier's answer more than it changes the pixels, so compare what the "
        "classifier says about a row with what it says about the autoencoder's reconstruction of it, not the "
        "pixels themselves.",
        "Use a divergence between two probability distributions over the classes; guard the logarithm against "
        "probabilities of zero.",
        "Score a row by the KL divergence between the classifier's probabilities on the row and on the "
        "autoencoder's reconstruction of it: sum over classes of p * log(p / q). Clip both to at least 1e-10.",
    ),
    time_limit=30,  # the attacks call the classifier a few dozen times
)
def adversarial_score(answer, rng):
    if not isinstance(answer, tuple | list) or len(answer) != 2:
        raise Fail(f"Pass a pair (predict_proba, adversarial_score), not {safe_repr(answer)}.")
    predict_proba, score = answer
    expect_function(predict_proba, "predict_proba", "rows of 64 pixels")
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
    results = []
    for name, adv in _attacks(predict_proba, x, y, rng):
        if len(adv) < 10:
            continue  # the classifier resisted this attack; nothing to detect
        attacked = finite_scores(score(adv.astype(np.float32)), len(adv), call)
        auc = roc_auc(clean, attacked)
        if auc < SCORE_FLOORS[name]:
            hint = (" Confident mistakes look like clean inputs to the classifier's confidence: the score must "
                    "compare predictions on the input and on its reconstruction.") if name == "confident PGD" else ""
            raise Fail(f"Your scores separate hidden clean digits from {len(adv)} hidden {name} adversarial "
                       f"examples with ROC AUC {auc:.2f}; the KL score of a trained autoencoder reaches at least "
                       f"{SCORE_FLOORS[name]}. Higher scores must mean more likely adversarial.{hint}")
        results.append(f"{name} {auc:.2f}")
    if not results:
        raise Fail("The classifier resisted every hidden attack, so there was nothing to detect: pass the lab's "
                   "classifier's predict_proba.")
    return f"ROC AUC on hidden clean digits against hidden adversarial examples: {', '.join(results)}."


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


def _bad_requests() -> dict[str, dict]:
    def request(shape, datatype, data):
        return {"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]}

    return {"32 pixels per row": request([2, 32], "FP32", [0.5] * 64),
            "a NaN pixel": request([1, 64], "FP64", ["NaN"] + [0.0] * 63),
            "a pixel of 5": request([1, 64], "FP32", [5.0] + [0.0] * 63),
            "text": request([1], "BYTES", ["a digit"])}


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

    test = load_digits("test")
    chosen = rng.choice(len(test), size=340, replace=False)
    x, y = test.X[chosen].astype(np.float64), test.labels[chosen]
    right = net.predict_proba(x).argmax(axis=1) == y
    x, y = x[right], y[right]
    clean, attacked = x[:80], x[80:]
    adv = reference_pgd(net.loss_gradient, attacked, y[80:], EPSILON, EPSILON / 4, 10, rng)
    adv = adv[net.predict_proba(adv).argmax(axis=1) != y[80:]]  # the attacks that work
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
    if false_alarms > 0.2:
        raise Fail(f"The server flags {false_alarms:.0%} of hidden clean test digits as adversarial; the threshold "
                   "in parameters.extra.threshold should come from a high quantile of clean scores.")
    if recall < RECALL_FLOOR:
        raise Fail(f"The server flags only {recall:.0%} of {len(adv)} hidden PGD adversarial examples (epsilon "
                   f"{EPSILON}); the lab's detector flags about 60 % at a 5 % false positive rate. Is the "
                   "threshold too high, or is detector.npz not the autoencoder trained to match the classifier's "
                   "predictions?")
    return (f"Served on a fresh MLServer: {false_alarms:.0%} of hidden clean digits flagged, {recall:.0%} of "
            f"{len(adv)} hidden adversarial examples flagged, 4 malformed requests refused with a 400, and the "
            "model still ready.")
