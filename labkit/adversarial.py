"""Lab 08's domain helpers: dense networks as numpy arrays, and reference attacks for the checks.

A dense network is a list of ``(kernel, bias, activation)`` layers, the shape in which ``labs/runtimes``
serve models without TensorFlow. The checks attack a model through these helpers: with exact gradients when
they have its weights (``DenseNet``), or by finite differences when they can only call it (``numeric_gradient``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "softmax")


def dense_layers(model) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The layers of a ``tf.keras`` model (or a list of models, chained) made of Dense layers only."""
    models = model if isinstance(model, list | tuple) else [model]
    layers = []
    for part in models:
        for layer in getattr(part, "layers", None) or []:
            if type(layer).__name__ == "InputLayer":
                continue
            if type(layer).__name__ != "Dense":
                raise ValueError(f"only Dense layers can be exported, not {type(layer).__name__}")
            activation = layer.get_config()["activation"]
            if activation not in ACTIVATIONS:
                raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
            kernel, bias = layer.get_weights()
            layers.append((np.asarray(kernel), np.asarray(bias), activation))
    if not layers:
        raise ValueError("the model has no Dense layers")
    return layers


def save_dense(model, path) -> None:
    """Save a Dense-only model (or a list of them, chained) as ``kernel_i``, ``bias_i`` and ``activations``."""
    arrays: dict[str, np.ndarray] = {}
    layers = dense_layers(model)
    for i, (kernel, bias, _) in enumerate(layers):
        arrays[f"kernel_{i}"], arrays[f"bias_{i}"] = kernel, bias
    arrays["activations"] = np.array([activation for _, _, activation in layers])
    np.savez(Path(path), **arrays)


def load_dense(path) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The layers ``save_dense`` wrote, or a ValueError that says what is missing."""
    with np.load(Path(path), allow_pickle=False) as saved:
        if "activations" not in saved.files:
            raise ValueError(f"{Path(path).name} has no `activations` array; write it with save_dense")
        activations = [str(a) for a in saved["activations"]]
        missing = [f"kernel_{i}" for i in range(len(activations)) if f"kernel_{i}" not in saved.files]
        if missing:
            raise ValueError(f"{Path(path).name} lacks {missing}")
        return [(saved[f"kernel_{i}"].astype(np.float64), saved[f"bias_{i}"].astype(np.float64), a)
                for i, a in enumerate(activations)]


def keras_model(layers):
    """A ``tf.keras.Sequential`` with these dense layers and weights (TensorFlow is imported here)."""
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input(shape=(np.shape(layers[0][0])[0],))])
    for kernel, bias, activation in layers:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
        dense = tf.keras.layers.Dense(np.shape(kernel)[1], activation=activation)
        model.add(dense)
        dense.set_weights([np.asarray(kernel, np.float32), np.asarray(bias, np.float32)])
    return model


def _activate(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return z


class DenseNet:
    """A dense classifier in numpy whose last layer is a softmax: probabilities, losses and exact input
    gradients of the cross-entropy, by backpropagation."""

    def __init__(self, layers):
        self.layers = [(np.asarray(k, np.float64), np.asarray(b, np.float64), a) for k, b, a in layers]
        if self.layers[-1][2] != "softmax":
            raise ValueError("the last layer must be a softmax (the model gives class probabilities)")
        for (kernel, _, _), (following, _, _) in zip(self.layers, self.layers[1:], strict=False):
            if kernel.shape[1] != following.shape[0]:
                raise ValueError(f"layer shapes do not chain: {kernel.shape} then {following.shape}")

    @property
    def n_inputs(self) -> int:
        return self.layers[0][0].shape[0]

    def _forward(self, x):
        outputs = [np.asarray(x, np.float64)]
        for kernel, bias, activation in self.layers:
            outputs.append(_activate(activation, outputs[-1] @ kernel + bias))
        return outputs

    def predict_proba(self, x) -> np.ndarray:
        return self._forward(x)[-1]

    def loss(self, x, y) -> np.ndarray:
        """Cross-entropy per row, ``-log p[y]``."""
        p = self.predict_proba(x)
        return -np.log(np.clip(p[np.arange(len(p)), np.asarray(y)], 1e-12, 1))

    def loss_gradient(self, x, y) -> np.ndarray:
        """d loss / d x per row."""
        outputs = self._forward(x)
        delta = outputs[-1].copy()
        delta[np.arange(len(delta)), np.asarray(y)] -= 1  # softmax with cross-entropy: p - onehot
        for i in range(len(self.layers) - 1, -1, -1):
            kernel = self.layers[i][0]
            grad = delta @ kernel.T
            if i == 0:
                return grad
            below, activation = outputs[i], self.layers[i - 1][2]
            if activation == "relu":
                grad = grad * (below > 0)
            elif activation == "tanh":
                grad = grad * (1 - below**2)
            elif activation == "sigmoid":
                grad = grad * below * (1 - below)
            delta = grad
        raise AssertionError("unreachable")


def numeric_gradient(predict_proba: Callable, x: np.ndarray, y: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """d(-log p[y]) / d x by central differences: one call of ``predict_proba`` with ``2 * pixels`` rows per input."""
    x = np.asarray(x, np.float32)
    n, d = x.shape
    steps = np.concatenate([np.eye(d), -np.eye(d)]).astype(np.float32) * h
    probes = (x[:, None, :] + steps[None]).reshape(-1, d)
    p = np.asarray(predict_proba(probes), dtype=np.float64).reshape(n, 2 * d, -1)
    logp = np.log(np.clip(p[np.arange(n), :, np.asarray(y)], 1e-12, 1))
    return -(logp[:, :d] - logp[:, d:]) / (2 * h)


def fgsm(gradient: Callable, x, y, epsilon: float) -> np.ndarray:
    """The fast gradient sign method with ``gradient(x, y)``, clipped to [0, 1]."""
    x = np.asarray(x, np.float64)
    return np.clip(x + epsilon * np.sign(gradient(x, y)), 0, 1)


def pgd(gradient: Callable, x, y, epsilon: float, step: float, steps: int, rng: np.random.Generator,
        target=None) -> np.ndarray:
    """L-infinity projected gradient descent from a random start. With ``target``, a targeted attack: it
    lowers the loss of the target class instead of raising that of ``y``, which makes confident mistakes."""
    x = np.asarray(x, np.float64)
    adv = np.clip(x + rng.uniform(-epsilon, epsilon, x.shape), 0, 1)
    for _ in range(steps):
        direction = -np.sign(gradient(adv, target)) if target is not None else np.sign(gradient(adv, y))
        adv = np.clip(np.clip(adv + step * direction, x - epsilon, x + epsilon), 0, 1)
    return adv


# -- a decision-based attack under a query budget -------------------------------------------------------


class BudgetSpent(RuntimeError):
    """Raised by a ``QueryBudget`` asked for one query more than its limit."""


class QueryBudget:
    """A predict function for ART's ``BlackBoxClassifier`` that asks ``ask(row) -> label`` one row at a time, at
    most ``limit`` rows in all, and keeps every row it sent (``sent``) with its answer (``answers``)."""

    def __init__(self, ask: Callable, limit: int, n_classes: int):
        self.ask, self.limit, self.n_classes = ask, int(limit), int(n_classes)
        self.sent: list[np.ndarray] = []
        self.answers: list[int] = []

    @property
    def used(self) -> int:
        return len(self.sent)

    def __call__(self, rows) -> np.ndarray:
        answers = []
        for row in np.asarray(rows, dtype=np.float32).reshape(len(rows), -1):  # one query per row
            if self.used >= self.limit:
                raise BudgetSpent(f"query budget of {self.limit} spent")
            label = int(self.ask(row))
            self.sent.append(row)
            self.answers.append(label)
            answers.append(label)
        return np.eye(self.n_classes)[answers]

    def best(self, image, label: int) -> tuple[list[tuple[int, float]], np.ndarray | None]:
        """What the attacker holds after each query: ``(queries spent, L-infinity distance from image of the
        closest row answered with another label than `label`)`` each time that distance shrinks, and that row."""
        image = np.asarray(image, dtype=np.float32).reshape(-1)
        history, best, closest = [], np.inf, None
        for spent, (row, answer) in enumerate(zip(self.sent, self.answers, strict=True), start=1):
            if answer != label:
                size = float(np.abs(row - image).max())
                if size < best:
                    best, closest = size, row
                    history.append((spent, size))
        return history, closest


def hop_skip_jump(budget: QueryBudget, image, seed: int, max_iter: int = 1000, init_size: int = 100,
                  **settings) -> tuple[int, list[tuple[int, float]], np.ndarray | None]:
    """ART's untargeted HopSkipJump (L-infinity) on one image through ``budget``, reproducibly, until the budget
    is spent or ``max_iter`` iterations are done: ``(label, history, closest)``, see ``QueryBudget.best``.

    ART draws its first adversarial image from an unseeded ``np.random.RandomState()`` (``_init_sample``), so we
    draw it here from ``np.random.default_rng(seed)``, uniform noise as ART does, and pass it as ``x_adv_init``;
    ART draws its probes from NumPy's global generator, which is seeded with ``seed`` for the run and restored
    after. Every query counts: the first one asks the label of the image, then the noise draws; ART itself
    asks again for the image's and the initial image's labels before its first iteration. ``settings`` go to
    ``HopSkipJump`` (``init_eval``, ``max_eval``...)."""
    from art.attacks.evasion import HopSkipJump
    from art.estimators.classification import BlackBoxClassifier

    image = np.asarray(image, dtype=np.float32).reshape(1, -1)
    rng, label = np.random.default_rng(seed), -1
    try:
        label = int(budget(image).argmax())
        for _ in range(init_size):
            start = rng.uniform(0, 1, image.shape).astype(np.float32)
            if budget(start).argmax() != label:
                break
        else:
            return label, [], None  # no noise image was misread: nothing to start from
    except BudgetSpent:
        return label, [], None
    attack = HopSkipJump(BlackBoxClassifier(budget, input_shape=image.shape[1:], nb_classes=budget.n_classes,
                                            clip_values=(0, 1)),
                         norm=np.inf, max_iter=max_iter, init_size=init_size, verbose=False, **settings)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        attack.generate(image, y=np.eye(budget.n_classes)[[label]], x_adv_init=start)
    except BudgetSpent:
        pass
    finally:
        np.random.set_state(state)
    return (label, *budget.best(image, label))
