"""Checks of lab 08: right answers pass on every seed, plausible wrong ones fail on every seed, with the right
message. The classifier and detector here are trained like the notebook's (smaller, seeded); the solution
notebook runs the real ones under nbval."""

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import labkit  # noqa: F401  (first: TensorFlow's Keras mode)
from labkit import bridge
from labkit.adversarial import DenseNet, dense_layers, keras_model, save_dense
from labkit.checks import check
from labkit.data import load_digits

from check_seeds import assert_fails_on_every_seed, assert_passes_on_every_seed

tf = pytest.importorskip("tensorflow")

RUNTIME = Path(__file__).resolve().parent.parent / "labs" / "runtimes" / "attack_guard.py"
loss_object = tf.keras.losses.SparseCategoricalCrossentropy()


def gradient(model, x, y):
    x = tf.convert_to_tensor(x, dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_object(y, model(x))
    return tape.gradient(loss, x)


# -- exercise 1: FGSM --------------------------------------------------------------------------------


def fgsm(model, x, y, epsilon):
    """The notebook's solution."""
    x = tf.convert_to_tensor(x, dtype=tf.float32)
    return tf.clip_by_value(x + epsilon * tf.sign(gradient(model, x, y)), 0, 1).numpy()


def fgsm_summed_loss_float64(model, x, y, epsilon):
    """Another right answer: the summed loss, numpy arithmetic."""
    x = np.asarray(x, dtype=np.float32)
    xt = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(y, model(xt)))
    return np.clip(x.astype(np.float64) + epsilon * np.sign(tape.gradient(loss, xt).numpy()), 0, 1)


def fgsm_from_art(model, x, y, epsilon):
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import TensorFlowV2Classifier

    n_classes = model.output_shape[-1]
    classifier = TensorFlowV2Classifier(model, nb_classes=n_classes, input_shape=(64,), loss_object=loss_object,
                                        clip_values=(0, 1))
    return FastGradientMethod(classifier, eps=epsilon).generate(np.asarray(x, np.float32), y=np.eye(n_classes)[y])


def random_signs(model, x, y, epsilon):
    """Noise of exactly the right size: must not pass as FGSM."""
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=np.shape(x))
    return np.clip(x + epsilon * signs, 0, 1)


def descent(model, x, y, epsilon):
    return np.clip(x - epsilon * np.sign(gradient(model, x, y).numpy()), 0, 1)


def unclipped(model, x, y, epsilon):
    return x + epsilon * np.sign(gradient(model, x, y).numpy())


def scaled_gradient(model, x, y, epsilon):
    g = gradient(model, x, y).numpy()
    return np.clip(x + epsilon * g / np.abs(g).max(axis=1, keepdims=True), 0, 1)


def predicted_labels(model, x, y, epsilon):
    return fgsm(model, x, model(x).numpy().argmax(axis=1), epsilon)


def twice_the_budget(model, x, y, epsilon):
    return fgsm(model, x, y, 2 * epsilon)


def the_perturbation(model, x, y, epsilon):
    return fgsm(model, x, y, epsilon) - x


@pytest.mark.parametrize("answer", [fgsm, fgsm_summed_loss_float64, fgsm_from_art])
def test_fgsm_passes(answer):
    assert_passes_on_every_seed("08.fgsm", answer)


@pytest.mark.parametrize("answer, words", [
    (random_signs, "equal FGSM|lowers the model's loss|ignores"),
    (scaled_gradient, "equal FGSM"),
    (descent, "lowers the model's loss"),
    (unclipped, "valid pixels are in [0, 1]"),
    (twice_the_budget, "more than the budget"),
    (the_perturbation, "more than the budget"),
    (predicted_labels, "true labels"),
    (lambda model, x, y, epsilon: x[:10], "expected (100, 64)"),
    (lambda model, x, y, epsilon: "adversarial", "return the adversarial images"),
], ids=["random signs", "scaled gradient", "descent", "unclipped", "2 epsilon", "perturbation", "predicted labels",
        "too few", "a string"])
def test_fgsm_fails_wrong_answers(answer, words):
    assert_fails_on_every_seed("08.fgsm", answer, words)


def test_fgsm_placeholder_and_non_function():
    def placeholder(model, x, y, epsilon):
        raise NotImplementedError

    assert check("08.fgsm", placeholder).status == "not_attempted"
    assert check("08.fgsm").status == "not_attempted"
    assert "should be a function" in check("08.fgsm", 3).message


# -- exercise 2: PGD ---------------------------------------------------------------------------------


def pgd(model, x, y, epsilon, step_size, steps, seed=0, project=True, start=True, clip=True, sign=1):
    """The notebook's solution, with switches for the usual mistakes."""
    x = tf.convert_to_tensor(x, dtype=tf.float32)
    noise = np.random.default_rng(seed).uniform(-epsilon, epsilon, x.shape).astype(np.float32) if start else 0
    adv = tf.clip_by_value(x + noise, 0, 1)
    for _ in range(steps):
        previous = adv
        adv = adv + sign * step_size * tf.sign(gradient(model, adv, y))
        if project == "last step":
            adv = tf.clip_by_value(adv, previous - epsilon, previous + epsilon)
        elif project:
            adv = tf.clip_by_value(adv, x - epsilon, x + epsilon)
        if clip:
            adv = tf.clip_by_value(adv, 0, 1)
    return adv.numpy()


def pgd_from_art(model, x, y, epsilon, step_size, steps, seed=0):
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    if seed is not None:
        np.random.seed(seed)
    n_classes = model.output_shape[-1]
    classifier = TensorFlowV2Classifier(model, nb_classes=n_classes, input_shape=(64,), loss_object=loss_object,
                                        clip_values=(0, 1))
    attack = ProjectedGradientDescent(classifier, eps=epsilon, eps_step=step_size, max_iter=steps, num_random_init=1,
                                      batch_size=512, verbose=False)
    return attack.generate(np.asarray(x, np.float32), y=np.eye(n_classes)[y])


def pgd_random_noise(model, x, y, epsilon, step_size, steps, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(x + rng.uniform(-epsilon, epsilon, np.shape(x)), 0, 1)


@pytest.mark.parametrize("answer", [pgd, pgd_from_art])
def test_pgd_passes(answer):
    assert_passes_on_every_seed("08.pgd", answer)


@pytest.mark.parametrize("answer, words", [
    (lambda m, x, y, e, s, n, seed=0: pgd(m, x, y, e, s, n, seed, project=False), "more than the budget"),
    (lambda m, x, y, e, s, n, seed=0: pgd(m, x, y, e, s, n, seed, project="last step"), "more than the budget"),
    (lambda m, x, y, e, s, n, seed=0: pgd(m, x, y, e, s, n, seed, clip=False), "valid pixels"),
    (lambda m, x, y, e, s, n, seed=0: pgd(m, x, y, e, s, n, seed, sign=-1), "lowers the model's loss"),
    (lambda m, x, y, e, s, n, seed=0: pgd(m, x, y, e, s, n, seed, start=False), "same images for two"),
    (lambda m, x, y, e, s, n, seed=0: pgd(m, x, y, e, s, 1, seed), "take all the steps"),
    (lambda m, x, y, e, s, n, seed=0: fgsm(m, x, y, e), "take all the steps"),
    (pgd_random_noise, "loss"),
    (lambda m, x, y, e, s, n, seed=0: pgd(m, x, y, e, s, n, None), "same seed"),
    (lambda m, x, y, e, s, n, seed=0: pgd_from_art(m, x, y, e, s, n, None), "same seed"),
], ids=["no projection", "projected around the last step", "unclipped", "descent", "no random start", "one step",
        "FGSM", "random noise", "unseeded start", "ART unseeded"])
def test_pgd_fails_wrong_answers(answer, words):
    assert_fails_on_every_seed("08.pgd", answer, words)


# -- exercise 3: the adversarial score ---------------------------------------------------------------


@functools.cache
def trained_models():
    """The notebook's classifier and KL autoencoder, and a plain autoencoder, trained as the notebook does."""
    train = load_digits("train")
    labkit.seed_everything(0)
    classifier = tf.keras.Sequential([tf.keras.Input(shape=(64,)), tf.keras.layers.Dense(32, activation="relu"),
                                      tf.keras.layers.Dense(8, activation="softmax")])
    classifier.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    classifier.fit(train.X, train.labels, epochs=20, batch_size=64, verbose=0)
    classifier.trainable = False
    encoder = tf.keras.Sequential([tf.keras.Input(shape=(64,)), tf.keras.layers.Dense(32, activation="relu"),
                                   tf.keras.layers.Dense(16, activation="relu")])
    decoder = tf.keras.Sequential([tf.keras.Input(shape=(16,)), tf.keras.layers.Dense(32, activation="relu"),
                                   tf.keras.layers.Dense(64, activation="sigmoid")])
    optimizer, kl = tf.keras.optimizers.Adam(0.005), tf.keras.losses.KLDivergence()

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = kl(classifier(x), classifier(decoder(encoder(x))))
        weights = encoder.trainable_weights + decoder.trainable_weights
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))

    for _ in range(30):
        for x in tf.data.Dataset.from_tensor_slices(train.X).shuffle(len(train.X), seed=3).batch(64):
            step(x)
    plain = tf.keras.Sequential([tf.keras.Input(shape=(64,))] + [
        tf.keras.layers.Dense(units, activation=activation)
        for units, activation in [(32, "relu"), (16, "relu"), (32, "relu"), (64, "sigmoid")]])
    plain.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="mse")
    plain.fit(train.X, train.X, epochs=30, batch_size=64, verbose=0)
    return classifier, encoder, decoder, plain


@pytest.fixture(scope="module")
def models():
    return trained_models()


def state():
    """What the notebook's run makes and the adversarial score's solution uses (for tests/mutants.py)."""
    predict_proba, reconstruct, *_ = scorers(trained_models())
    return {"predict_proba": predict_proba, "reconstruct": reconstruct}


def scorers(models):
    classifier, encoder, decoder, plain = models

    def predict_proba(rows):
        return classifier(np.asarray(rows, np.float32)).numpy()

    def reconstruct(rows):
        return decoder(encoder(np.asarray(rows, np.float32))).numpy()

    def kl_score(rows):
        p = np.clip(predict_proba(rows), 1e-10, 1)
        q = np.clip(predict_proba(reconstruct(rows)), 1e-10, 1)
        return (p * np.log(p / q)).sum(axis=1)

    def reconstruction_error(rows):
        rows = np.asarray(rows, np.float32)
        return ((rows - plain(rows).numpy()) ** 2).mean(axis=1)

    def uncertainty(rows):
        return 1 - predict_proba(rows).max(axis=1)

    return predict_proba, reconstruct, kl_score, reconstruction_error, uncertainty


def both(models):
    """p on the rows and q on their reconstructions, for the scores written from them."""
    predict_proba, reconstruct, *_ = scorers(models)
    return lambda rows: (predict_proba(rows), predict_proba(reconstruct(rows)))


def test_adversarial_score_passes_the_kl_score(models):
    predict_proba, reconstruct, kl_score, *_ = scorers(models)
    assert_passes_on_every_seed("08.adversarial_score", (predict_proba, reconstruct, kl_score))
    assert "confident PGD" in check("08.adversarial_score", (predict_proba, reconstruct, kl_score), seed=0).message


def test_adversarial_score_passes_other_right_ways_to_write_it(models):
    from scipy.special import rel_entr
    from scipy.stats import entropy

    predict_proba, reconstruct, *_ = scorers(models)
    pq = both(models)

    def float32(rows):
        p, q = (np.clip(a, 1e-10, 1).astype(np.float32) for a in pq(rows))
        return np.sum(p * (np.log(p) - np.log(q)), axis=1)

    def with_scipy(rows):
        p, q = (np.maximum(a, 1e-10) for a in pq(rows))
        return entropy(p, q, axis=1)

    def with_tensorflow(rows):
        p, q = (tf.clip_by_value(tf.convert_to_tensor(a), 1e-10, 1) for a in pq(rows))
        return tf.reduce_sum(p * tf.math.log(p / q), axis=1).numpy()

    for score in [float32, with_scipy, with_tensorflow,
                  lambda rows: rel_entr(*(np.clip(a, 1e-10, 1) for a in pq(rows))).sum(axis=1)]:
        assert_passes_on_every_seed("08.adversarial_score", (predict_proba, reconstruct, score), seeds=range(5))


def test_adversarial_score_fails_wrong_scores(models):
    predict_proba, reconstruct, kl_score, reconstruction_error, uncertainty = scorers(models)
    pq = both(models)

    def kl(p, q, clip=1e-10):
        p, q = np.clip(p, clip, 1), np.clip(q, clip, 1)
        return (p * np.log(p / q)).sum(axis=1)

    differs = "differ from the KL divergence"
    cases = {
        "reversed KL": (lambda rows: kl(*pq(rows)[::-1]), "the other way round"),
        "total variation": (lambda rows: 0.5 * np.abs(np.subtract(*pq(rows))).sum(axis=1), "total variation"),
        "Jensen-Shannon": (lambda rows: 0.5 * kl(pq(rows)[0], np.add(*pq(rows)) / 2)
                           + 0.5 * kl(pq(rows)[1], np.add(*pq(rows)) / 2), "Jensen-Shannon"),
        "symmetric KL": (lambda rows: kl(*pq(rows)) + kl(*pq(rows)[::-1]), "KL(q || p)"),
        "squared difference": (lambda rows: (np.subtract(*pq(rows)) ** 2).sum(axis=1), differs),
        "Keras's clip": (lambda rows: kl(*pq(rows), clip=1e-7), "clipped at 1e-7"),
        "clipped at 1.5e-10": (lambda rows: kl(*pq(rows), clip=1.5e-10), differs),
        "not clipped": (lambda rows: kl(*pq(rows), clip=1e-300), "without clipping|NaN or infinite"),
        "mean over classes": (lambda rows: kl(*pq(rows)) / 8, differs),
        "reconstruction error": (reconstruction_error, differs),  # a plain autoencoder's
        "uncertainty": (uncertainty, differs),  # the classifier's own confidence
        "negated": (lambda rows: -kl_score(rows), differs),
        "noise": (lambda rows: kl_score(rows) + np.random.default_rng().normal(0, 1e-3, len(rows)), "second call"),
        "too few": (lambda rows: kl_score(rows)[:5], "expected"),
        "NaN": (lambda rows: np.full(len(rows), np.nan), "NaN or infinite"),
    }
    for what, (score, words) in cases.items():
        messages = assert_fails_on_every_seed("08.adversarial_score", (predict_proba, reconstruct, score), words)
        assert messages, what


def test_adversarial_score_needs_the_three_functions(models):
    predict_proba, reconstruct, kl_score, *_ = scorers(models)
    assert "Pass the three functions" in check("08.adversarial_score", kl_score).message
    assert "Pass the three functions" in check("08.adversarial_score", (predict_proba, kl_score)).message
    assert "should be a function" in check("08.adversarial_score", (predict_proba, 3, kl_score)).message
    assert "reconstruct(" in check("08.adversarial_score", (predict_proba, lambda rows: rows[:, :8], kl_score)).message


# -- exercise 4: the threshold -------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [
    lambda s, fpr: np.quantile(s, 1 - fpr),
    lambda s, fpr: float(np.percentile(s, 100 * (1 - fpr))),
    lambda s, fpr: sorted(s)[int(np.ceil(len(s) * (1 - fpr))) - 1],
], ids=["quantile", "percentile", "sorted"])
def test_threshold_passes(answer):
    assert_passes_on_every_seed("08.threshold", answer)


@pytest.mark.parametrize("answer, words", [
    (lambda s, fpr: np.mean(s) + 1.645 * np.std(s), "should flag about"),  # a Gaussian formula
    (lambda s, fpr: np.quantile(s, fpr), "should flag about"),  # the wrong tail
    (lambda s, fpr: np.percentile(s, 1 - fpr), "should flag about"),  # percent for a fraction
    (lambda s, fpr: np.max(s), "should flag about"),
    (lambda s, fpr: np.median(s), "should flag about"),
    (lambda s, fpr: float("nan"), "NaN"),
    (lambda s, fpr: [1.0], "not a number"),
], ids=["gaussian", "wrong tail", "percent", "max", "median", "nan", "list"])
def test_threshold_fails_wrong_answers(answer, words):
    assert_fails_on_every_seed("08.threshold", answer, words)


# -- exercise 5: the served guard ----------------------------------------------------------------------


def clean_threshold(models, fpr=0.05):
    _, _, kl_score, *_ = scorers(models)
    return float(np.quantile(kl_score(load_digits("test").X), 1 - fpr))


def write_guard(folder: Path, models, threshold, detector="kl", runtime=RUNTIME, implementation=None):
    classifier, encoder, decoder, plain = models
    folder.mkdir(parents=True)
    shutil.copy(runtime, folder)
    save_dense(classifier, folder / "classifier.npz")
    if detector == "kl":
        save_dense([encoder, decoder], folder / "detector.npz")
    elif detector == "encoder":
        save_dense(encoder, folder / "detector.npz")
    extra = {} if threshold is None else {"threshold": threshold}
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "guarded", "implementation": implementation or "attack_guard.AttackGuard",
        "parameters": {"uri": "./classifier.npz", "extra": extra}}))
    return str(folder)


def test_runtime_passes_the_guarded_folder(tmp_path, models):
    folder = write_guard(tmp_path / "guarded", models, clean_threshold(models))
    for seed in range(3):  # each call starts a server; what varies with the seed is which digits are sent
        feedback = check("08.runtime", folder, seed=seed)
        assert feedback.status == "passed", feedback.message
    assert "refused with a 400" in feedback.message


@pytest.mark.parametrize("detector, threshold, words", [
    ("kl", 1e9, "flags only 0%"),
    ("kl", 0.0, "hidden clean test digits as adversarial"),
    ("kl", "fpr 0.2", "the exercise asks for 5 %"),
    ("encoder", 0.1, "save the encoder and the decoder together"),
    (None, None, "lacks the outputs"),
], ids=["threshold too high", "threshold zero", "20 % false alarms", "encoder only", "no detector"])
def test_runtime_fails_wrong_folders(tmp_path, models, detector, threshold, words):
    if threshold == "fpr 0.2":
        threshold = clean_threshold(models, fpr=0.2)
    folder = write_guard(tmp_path / "guarded", models, threshold, detector=detector)
    for seed in range(2):
        feedback = check("08.runtime", folder, seed=seed)
        assert feedback.status == "failed", feedback.message
        assert words in feedback.message, feedback.message


def test_runtime_false_alarm_bound_on_every_seed(models):
    """What 08.runtime decides about the false alarms, on 20 seeds, in-process (one server per seed is slow): a
    threshold at 5 % of clean scores passes on every seed; one at 20 % fails on every seed."""
    from labkit.checks.lab08 import _false_alarm_bound, guard_rows

    classifier, encoder, decoder, _ = models
    net, autoencoder = DenseNet(dense_layers(classifier)), DenseNet(dense_layers([encoder, decoder]) + [
        (np.eye(64), np.zeros(64), "softmax")])  # a DenseNet needs a softmax at the end; only _forward is used

    def score(rows):
        p = np.clip(net.predict_proba(rows), 1e-10, 1)
        q = np.clip(net.predict_proba(autoencoder._forward(rows)[-2]), 1e-10, 1)
        return (p * np.log(p / q)).sum(axis=1)

    right = clean_threshold(models, 0.05)
    twenty = clean_threshold(models, 0.2)
    for seed in range(20):
        clean, _, _ = guard_rows(net, np.random.default_rng(seed))
        scores, bound = score(clean), _false_alarm_bound(len(clean))
        assert (scores > right).mean() <= bound, seed
        assert (scores > twenty).mean() > bound, seed


def test_runtime_fails_a_folder_without_a_dense_classifier(tmp_path, models):
    folder = Path(write_guard(tmp_path / "guarded", models, 0.1))
    (folder / "classifier.npz").unlink()
    assert "not a dense classifier" in check("08.runtime", str(folder)).message


@pytest.mark.parametrize("answer, words", [
    (None, "as a string"), (42, "as a string"), ("", "not a model folder"), ("/no/such/folder", "not a model folder"),
])
def test_runtime_fails_what_is_not_a_model_folder(answer, words):
    feedback = check("08.runtime", answer)
    assert feedback.status == "failed" and words in feedback.message, feedback.message


def test_runtime_stateful_defence_blocks_crowding_clients_only(tmp_path, models):
    from labkit.client import Client, InferenceServerError
    from labkit.serving import Server
    from mlserver.codecs import NumpyRequestCodec
    from mlserver.types import Parameters

    folder = Path(write_guard(tmp_path / "repo" / "guarded", models, None, detector=None))
    settings = json.loads((folder / "model-settings.json").read_text())
    settings["parameters"]["extra"] = {"stateful": {"memory": 50, "k": 3, "distance": 0.3}}
    (folder / "model-settings.json").write_text(json.dumps(settings))

    def request(rows, who):
        payload = NumpyRequestCodec.encode_request(np.asarray(rows, np.float32))
        payload.parameters = Parameters(**payload.parameters.model_dump(exclude_none=True), client=who)
        return payload

    digits = load_digits("test").X
    probe = digits[0] + np.random.default_rng(0).normal(0, 0.01, (10, 64))
    with Server(folder.parent, settings={"parallel_workers": 0}) as server, Client(server) as client:
        for i in range(0, 100, 10):
            client.predict("guarded", request(digits[i:i + 10], "app"))  # distinct digits pass
        with pytest.raises(InferenceServerError) as blocked:
            client.predict("guarded", request(np.clip(probe, 0, 1), "attacker"))
        assert blocked.value.status == 403
        with pytest.raises(InferenceServerError):
            client.predict("guarded", request(digits[200:201], "attacker"))  # blocked from then on
        assert client.predict("guarded", request(digits[300:310], "app"))["predict"].shape == (10, 1)


# -- the hidden models cross the bridge as their weights ------------------------------------------------


class FakeBridge(bridge.Bridge):
    def __init__(self, folder):
        self.folder = folder


def test_a_hidden_keras_model_reaches_the_kernel_as_the_same_model(tmp_path):
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(64, 12)), rng.normal(size=12), "tanh"), (rng.normal(size=(12, 8)), np.zeros(8),
                                                                          "softmax")]
    model = keras_model(layers)
    bridge._write(tmp_path, "in-1", {"args": [model, np.ones(3)]}, None)  # the grader's side
    rebuilt = bridge._read(tmp_path, "in-1", None, {})["args"][0]  # the kernel's side
    x = load_digits("test").X[:20]
    assert np.allclose(rebuilt(x).numpy(), model(x).numpy(), atol=1e-6)
    assert [a for *_, a in dense_layers(rebuilt)] == ["tanh", "softmax"]
    assert np.allclose(DenseNet(layers).predict_proba(x), model(x).numpy(), atol=1e-5)
    # the grader never decodes one (a kernel cannot send the grader a model to build)
    with pytest.raises(bridge.BridgeError):
        bridge._read(tmp_path, "in-1", FakeBridge(tmp_path))
    # a model with other layers does not cross
    conv = tf.keras.Sequential([tf.keras.Input(shape=(8, 8, 1)), tf.keras.layers.Conv2D(2, 3)])
    with pytest.raises(bridge.BridgeError):
        bridge._write(tmp_path, "in-2", {"args": [conv]}, None)


# -- HopSkipJump under a query budget (labkit.adversarial) ---------------------------------------------


def test_seeded_hop_skip_jump_gives_identical_results_twice():
    from labkit.adversarial import BudgetSpent, QueryBudget, hop_skip_jump

    rng = np.random.default_rng(0)
    net = DenseNet([(rng.normal(0, 0.3, (64, 24)), np.zeros(24), "tanh"), (rng.normal(0, 1, (24, 8)), np.zeros(8),
                                                                         "softmax")])
    image = load_digits("test").X[3]

    def run(seed, limit=400):
        budget = QueryBudget(lambda row: net.predict_proba(row[None]).argmax(), limit, n_classes=8)
        np.random.seed(123)  # whatever the global generator holds, the run is the same and leaves it as it was
        label, history, closest = hop_skip_jump(budget, image, seed=seed, init_eval=10, max_eval=40)
        assert np.random.randint(2**31) == np.random.RandomState(123).randint(2**31)
        return budget, label, history, closest

    first, again, other = run(0), run(0), run(1)
    assert first[0].used == 400  # it spends the whole budget, and no more
    assert np.array_equal(np.stack(first[0].sent), np.stack(again[0].sent))
    assert first[1:3] == again[1:3] and np.array_equal(first[3], again[3])
    assert not np.array_equal(np.stack(first[0].sent), np.stack(other[0].sent))
    label, history, closest = first[1:]
    assert label == net.predict_proba(image[None]).argmax()
    assert net.predict_proba(closest[None]).argmax() != label  # what it holds is misread
    assert history[-1][1] == pytest.approx(np.abs(closest - image).max())
    assert [size for _, size in history] == sorted((size for _, size in history), reverse=True)
    assert history[-1][1] < 0.5 * history[0][1]  # the attack walked towards the image
    budget = QueryBudget(lambda row: 0, 1, n_classes=8)
    budget(image[None])
    with pytest.raises(BudgetSpent):
        budget(image[None])
