"""Checks of lab 07, "Detect outliers"."""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from labkit.checks import (
    Fail, call, expect_function, finite_scores, model_folder_repository, number, read_model_folder, register, safe_repr,
    roc_auc, serve_for_check, server_error_reason,
)
from labkit.data import corrupt_rows, digit_outliers, load_digits




# -- exercise 1: Mahalanobis ---------------------------------------------------------------------


def _correlated_table(rng: np.random.Generator, d: int):
    """A sampler of rows driven by a few hidden factors (so features correlate strongly), partly skewed,
    like real measurements."""
    loadings = rng.normal(size=(max(2, d // 4), d))
    scale = rng.uniform(0.5, 50, size=d)
    shift = rng.normal(0, 100, size=d)
    skewed = rng.random(d) < 0.4

    def sample(n: int) -> np.ndarray:
        z = rng.normal(size=(n, len(loadings))) @ loadings + 0.2 * rng.normal(size=(n, d))
        z /= z.std(axis=0, keepdims=True) if n > 1 else 1
        z[:, skewed] = np.exp(0.5 * z[:, skewed])
        return z * scale + shift

    return sample


def _flags_and_scores(result, n: int, call: str):
    try:
        data = dict(dict(result)["data"])
        flags = np.asarray(data["is_outlier"])
        scores = data.get("instance_score")
    except (TypeError, ValueError, KeyError):
        raise Fail(f"{call} returned {safe_repr(result)}; return a dict like alibi-detect's: "
                   "{'data': {'is_outlier': ..., 'instance_score': ...}, 'meta': {...}}.") from None
    if flags.shape not in ((n,), (n, 1)) or not np.isin(flags, [0, 1]).all():
        raise Fail(f"{call}: data['is_outlier'] should hold {n} values 0/1 (or booleans), one per row; "
                   f"got shape {flags.shape}.")
    return flags.reshape(n).astype(bool), finite_scores(scores, n, f"{call}['data']['instance_score']")


@register(
    "07.mahalanobis",
    points=3,
    title="A Mahalanobis detector with a threshold for a target false positive rate",
    hints=(
        "A row is unusual when it is far from the reference rows, measured in a way that accounts for how the "
        "features vary together: the Mahalanobis distance uses the mean and the inverse covariance of X_ref.",
        "Fit the mean and the inverse covariance on X_ref. Set the threshold at the (1 - fpr) quantile of "
        "distances of rows the fit did not see (out-of-fold, as the exercise says): a fit scores its own rows "
        "too well, so new clean rows would be flagged more often than fpr. No formula that assumes Gaussian data.",
        "Keep score(X) (one distance per row) and threshold as attributes, which later cells use; predict(X) "
        "returns {'data': {'instance_score': score(X), 'is_outlier': score(X) > threshold}, 'meta': {}}.",
    ),
)
def mahalanobis(answer, rng):
    expect_function(answer, "MahalanobisDetector", "reference rows and a false positive rate")
    with threadpool_limits(1):  # small matrices: BLAS threads only fight for the cores
        for fpr in rng.permutation([0.01, 0.02, 0.05]):  # every rate on every call, two of them not the lab's
            _mahalanobis_at(answer, rng, float(fpr))
    return ("On small hidden tables your threshold flags new clean rows at the rate a held-out threshold does, "
            "for 3 rates; outliers caught on large ones; score() and threshold agree with predict().")


SMALL_TABLES, SMALL_ROWS, SMALL_NEW = 30, 150, 400  # where the fit's own rows sit visibly closer than new ones


def _held_out_reference(X_ref, fpr):
    """The exercise's fit: (mean, inverse covariance) of every row, and the threshold from 5-fold held-out
    distances; and, for comparison, the threshold from the fitted rows' own distances."""
    def fit(rows):
        return rows.mean(axis=0), np.linalg.pinv(np.cov(rows, rowvar=False))

    def distance(fitted, rows):
        centred = rows - fitted[0]
        return np.sqrt(np.einsum("ij,jk,ik->i", centred, fitted[1], centred))

    held_out = np.empty(len(X_ref))
    for learn, scored in KFold(5, shuffle=True, random_state=0).split(X_ref):
        held_out[scored] = distance(fit(X_ref[learn]), X_ref[scored])
    full = fit(X_ref)
    threshold = float(np.quantile(held_out, 1 - fpr))
    # NumPy may hand this memory to the answer's next np.empty: leave NaN there, not distances an answer that
    # never fills its own array could pass with
    held_out.fill(np.nan)
    return (lambda rows: distance(full, rows)), threshold, float(np.quantile(distance(full, X_ref), 1 - fpr))


def _mahalanobis_at(answer, rng, fpr):
    d = int(rng.integers(8, 17))
    sample = _correlated_table(rng, d)
    # Large tables: does the score separate outliers, and do score(), threshold and predict() agree?
    reference, outliers = sample(1500), corrupt_rows(sample(1000), "shuffle", int(rng.integers(2**32)))
    clean = sample(2000)
    shown = f"MahalanobisDetector(<1500 rows of {d} features>, fpr={fpr})"
    detector = _fitted(answer, shown, reference, fpr)
    _, clean_scores = _flags_and_scores(detector.predict(clean.copy()), len(clean), f"{shown}.predict(<2000 rows>)")
    out_flags, out_scores = _flags_and_scores(detector.predict(outliers.copy()), len(outliers),
                                              f"{shown}.predict(<1000 rows>)")
    auc = roc_auc(clean_scores, out_scores)
    if auc < 0.9:
        raise Fail(f"{shown}: instance scores separate clean rows from rows stitched from other rows with "
                   f"ROC AUC {auc:.2f} only; the Mahalanobis distance reaches well above 0.9. Does your "
                   "score use the inverse covariance, so that correlations count?")
    recall = float(out_flags.mean())
    if recall < 0.5:
        raise Fail(f"{shown} flags only {recall:.0%} of rows stitched from other rows; use the full "
                   "covariance of the features, not one feature at a time.")
    _expect_score_and_threshold(detector, outliers, out_scores, out_flags, shown)
    _expect_full_fit(clean_scores, _held_out_reference(reference, fpr)[0](clean), shown)

    # Small tables: 150 rows for up to 16 features, where the rows a fit learned from sit clearly closer to it
    # than new rows do. The rate on new clean rows, averaged over 30 tables, is compared with that of the
    # exercise's threshold (held-out distances) and of a threshold on the fitted rows' own distances, on the
    # same rows: a rate closer to the second than to the first is the second's mistake.
    rates = np.zeros(3)  # the answer's, held-out threshold's, fitted rows' threshold's
    shown = f"MahalanobisDetector(<{SMALL_ROWS} rows of {d} features>, fpr={fpr})"
    for _ in range(SMALL_TABLES):
        reference, clean = sample(SMALL_ROWS), sample(SMALL_NEW)
        flags, _ = _flags_and_scores(_fitted(answer, shown, reference, fpr).predict(clean.copy()), len(clean),
                                     f"{shown}.predict(<{SMALL_NEW} rows>)")
        distance, held_out, own_rows = _held_out_reference(reference, fpr)
        scores = distance(clean)
        rates += [flags.mean(), (scores > held_out).mean(), (scores > own_rows).mean()]
    rate, expected, naive = rates / SMALL_TABLES
    half_gap = (naive - expected) / 2
    if abs(rate - expected) > max(half_gap, 0.1 * fpr):
        own_rows = rate > expected and abs(rate - naive) < abs(rate - expected)
        why = ("A fit scores its own rows too well: set the threshold on distances of rows it did not learn "
               "from (out-of-fold), not on the reference rows' own distances." if own_rows else
               "Set the threshold at the (1 - fpr) quantile of held-out distances of the reference rows, not "
               "from a formula that assumes Gaussian data, and use the fpr you are given.")
        raise Fail(f"{shown} flags {rate:.1%} of new clean rows from the same source (mean over "
                   f"{SMALL_TABLES} tables); a threshold from held-out distances flags {expected:.1%} of the same "
                   f"rows at fpr={fpr}, one from the fitted rows' own distances {naive:.1%}. {why}")


def _expect_full_fit(scores, distances, shown):
    """New data is scored by the fit of every reference row: the scores are the Mahalanobis distances of that
    fit, up to a constant factor (a covariance with ddof 0 or 1) or squared."""
    for power in (1, 2):
        ratio = scores / distances ** power
        if np.all(np.isfinite(ratio)) and ratio.mean() > 0 and ratio.std() <= 1e-3 * ratio.mean():
            return
    raise Fail(f"{shown}: the scores of new rows are not the Mahalanobis distances from the mean and inverse "
               "covariance of all the reference rows (nor their squares). Score new data with a fit of every "
               "reference row, after the folds have set the threshold.")


def _fitted(answer, shown, reference, fpr):
    detector = call(answer, shown, reference.copy(), fpr)
    if not callable(getattr(detector, "predict", None)):
        raise Fail(f"{shown} returned {safe_repr(detector)}, which has no predict method; the class's "
                   "constructor fits the detector, and predict(X) returns the flags and scores.")
    return detector


def _expect_score_and_threshold(detector, rows, scores, flags, shown):
    """Later cells of the lab call ``detector.score(X)`` and read ``detector.threshold``: both must exist and
    agree with what ``predict`` returns."""
    score = getattr(detector, "score", None)
    if not callable(score):
        raise Fail(f"{shown} has no score method; keep score(X), the distance of each row, as a method: the "
                   "lab's next cells use it.")
    again = finite_scores(call(score, f"{shown}.score(X)", rows.copy()), len(rows),
                          f"{shown}.score(<{len(rows)} rows>)")
    if not np.allclose(again, scores, rtol=1e-6, atol=1e-9):
        raise Fail(f"{shown}.score(X) differs from predict(X)['data']['instance_score'] for the same rows.")
    try:
        threshold = number(detector.threshold, f"{shown}.threshold")
    except AttributeError:
        raise Fail(f"{shown} has no threshold attribute; keep the threshold as detector.threshold: the lab's next "
                   "cells use it.") from None
    if not math.isfinite(threshold) or (flags != (scores > threshold)).sum() > 0.002 * len(rows):
        raise Fail(f"{shown}.predict flags other rows than those whose score is above {shown}.threshold "
                   f"({threshold:g}); a row is an outlier when its score is above the threshold.")


# -- exercise 2: the VAE's outlier score ----------------------------------------------------------

AUC_FLOORS = {"noise": 0.85, "mask": 0.85, "photo": 0.9}


def _vae_and_score(answer):
    """The student's ``(outlier_score, vae)``: the score function and the model it should use."""
    try:
        score, vae = answer
    except (TypeError, ValueError):
        raise Fail(f"Pass your score function and the VAE it uses: check(\"07.vae_score\", (outlier_score, vae)), "
                   f"not {safe_repr(answer)}.") from None
    expect_function(score, "outlier_score", "rows of 64 pixels")
    try:
        encoder, decoder = vae.encoder, vae.decoder
    except AttributeError:
        raise Fail(f"The second item should be the trained VAE, whose .encoder and .decoder the score uses; got "
                   f"{safe_repr(vae)}.") from None
    return score, encoder, decoder


def _reconstruction_error(encoder, decoder, rows: np.ndarray) -> np.ndarray:
    """The score the exercise asks for, from the student's own VAE: decode the mean code, no sampling."""
    codes = call(encoder.predict, "vae.encoder.predict(rows)", rows, verbose=0)
    try:
        z_mean = np.asarray(codes[0], dtype=np.float32)
    except (TypeError, ValueError, IndexError, KeyError):
        raise Fail("vae.encoder should return the code's mean and log-variance, as the lab's encoder does.") from None
    rebuilt = np.asarray(call(decoder.predict, "vae.decoder.predict(z_mean)", z_mean, verbose=0), dtype=np.float64)
    if rebuilt.shape != rows.shape:
        raise Fail(f"vae.decoder returned images of shape {rebuilt.shape} for {rows.shape[0]} codes; it should "
                   "rebuild rows of 64 pixels.")
    return ((rows - rebuilt) ** 2).mean(axis=1)


@register(
    "07.vae_score",
    points=3,
    title="An outlier score from the variational autoencoder",
    hints=(
        "The score of a row is how badly the VAE rebuilds it: compare each row with its own reconstruction, so "
        "that higher means more unusual.",
        "Rebuild from the mean of the code (reconstruct above does: encoder, then decoder on z_mean), not from a "
        "random sample of it, so that the same rows always get the same scores.",
        "Take the squared difference between the rows and reconstruct(rows), then its mean along the pixels "
        "(axis=1): one number per row. The check compares it with your VAE's own reconstruction error.",
    ),
)
def vae_score(answer, rng):
    score, encoder, decoder = _vae_and_score(answer)
    test = load_digits("test").X
    clean = test[rng.choice(len(test), size=300, replace=False)]
    results, ratios = [], []
    for kind, floor in AUC_FLOORS.items():
        outliers = digit_outliers(kind, 200, int(rng.integers(2**32))).reshape(200, 64)
        rows = np.concatenate([clean, outliers])
        order = rng.permutation(len(rows))
        shown = f"outlier_score(<{len(rows)} rows of 64 pixels>)"
        scores = np.empty(len(rows))
        scores[order] = finite_scores(call(score, shown, rows[order].copy()), len(rows), shown)
        auc = roc_auc(scores[: len(clean)], scores[len(clean) :])
        if auc < floor:
            raise Fail(f"Your scores separate hidden clean test digits from '{kind}' outliers with ROC AUC "
                       f"{auc:.2f}; a working autoencoder score reaches at least {floor}. Higher scores must "
                       "mean more unusual; is the model trained, and do you compare each row with its own "
                       "reconstruction?")
        results.append(f"{kind} {auc:.2f}")
        ratios.append(scores / np.maximum(_reconstruction_error(encoder, decoder, rows.astype(np.float32)), 1e-12))
    again = finite_scores(call(score, "outlier_score(<50 rows>)", clean[:50].copy()), 50, "outlier_score(<50 rows>)")
    if not np.allclose(again, scores[:50], rtol=1e-4, atol=1e-6):
        raise Fail("outlier_score gives different scores for the same rows on a second call; decode the "
                   "latent mean instead of a random sample, so that a threshold means the same every time.")
    # The score must be the VAE's own reconstruction error (a sum over pixels instead of a mean is the same
    # score on another scale); any other score that separates outliers well is another detector.
    ratios = np.concatenate(ratios)
    scale = float(np.median(ratios))
    if not scale > 0 or np.abs(ratios - scale).max() > 2e-3 * scale:
        raise Fail("Your scores are not your VAE's reconstruction error: for some rows they differ from the mean "
                   "squared difference between the row and the decoder's image of its mean code. Use the VAE "
                   "(reconstruct above), squared differences, and no random sampling.")
    return f"Your VAE's reconstruction error; ROC AUC on hidden clean digits against hidden outliers: " \
           f"{', '.join(results)}."


# -- exercise 3: the cheapest threshold -----------------------------------------------------------


def _expected_cost(threshold, clean, outliers, cost_alarm, cost_miss, outlier_rate) -> float:
    false_alarms = float((clean > threshold).mean())
    misses = float((outliers <= threshold).mean())
    return (1 - outlier_rate) * false_alarms * cost_alarm + outlier_rate * misses * cost_miss


@register(
    "07.best_threshold",
    points=2,
    title="The threshold with the lowest expected cost",
    hints=(
        "Only the scores themselves change which rows are flagged, so the cheapest threshold is one of them, or "
        "one below all of them (flag everything).",
        "For each candidate t: FPR = share of clean scores above t, 1 - recall = share of outlier scores at or "
        "below t; the cost per row is (1 - outlier_rate) × FPR × cost_alarm + outlier_rate × (1 - recall) × "
        "cost_miss. Keep the cheapest.",
        "Every argument counts: the outlier_rate weighs the two kinds of mistake, so a fixed percentile of the "
        "clean scores is right only by luck. np.searchsorted on the sorted scores counts rows at or below each "
        "candidate at once.",
    ),
)
def best_threshold(answer, rng):
    expect_function(answer, "best_threshold", "clean scores, outlier scores and the costs")
    # Every kind on every call: scores as measured; scores rounded to half points (ties, where "above the
    # threshold" and "at or below it" must be counted exactly); a case where flagging everything is cheapest.
    kinds = ["measured"] * 6 + ["rounded"] * 4 + ["flag everything"]
    rates = iter(rng.permutation([0.001, 0.01, 0.05, 0.2, 0.5, 0.05, 0.01, 0.2, 0.5, 0.2, 0.5]))
    for kind in rng.permutation(kinds):
        clean = rng.gamma(float(rng.uniform(1, 4)), 1.0, size=int(rng.integers(200, 2000)))
        outliers = rng.gamma(float(rng.uniform(2, 6)), float(rng.uniform(1, 2)), size=int(rng.integers(30, 500)))
        cost_alarm, cost_miss = float(rng.uniform(0.5, 5)), float(rng.uniform(5, 200))
        outlier_rate = float(next(rates))
        if kind == "rounded":  # half-point steps: many ties
            clean, outliers = np.round(2 * clean) / 2, np.round(2 * outliers[:int(rng.integers(20, 60))]) / 2
        elif kind == "flag everything":  # one outlier below every clean score, and misses cost a lot
            outliers = rng.gamma(float(rng.uniform(2, 6)), 1.0, size=int(rng.integers(10, 30)))
            outliers[0] = clean.min() - float(rng.uniform(0.01, 1))
            cost_alarm, cost_miss, outlier_rate = float(rng.uniform(0.5, 2)), float(rng.uniform(500, 1000)), 0.5
        shown = (f"best_threshold(<{len(clean)} clean scores>, <{len(outliers)} outlier scores>, "
                f"cost_alarm={cost_alarm:.2f}, cost_miss={cost_miss:.1f}, outlier_rate={outlier_rate})")
        got = call(answer, shown, clean.copy(), outliers.copy(), cost_alarm, cost_miss, outlier_rate)
        threshold = number(got, f"The result of {shown}")
        if math.isnan(threshold):
            raise Fail(f"{shown} returned NaN; return a threshold.")
        candidates = np.concatenate([[-np.inf], clean, outliers])
        best = min(_expected_cost(t, clean, outliers, cost_alarm, cost_miss, outlier_rate) for t in candidates)
        cost = _expected_cost(threshold, clean, outliers, cost_alarm, cost_miss, outlier_rate)
        if cost > best * (1 + 1e-9) + 1e-12:
            raise Fail(f"{shown}: your threshold costs {cost:.4g} per row on these scores, but another "
                       f"threshold costs {1 - best / cost:.0%} less. A row is "
                       "flagged when its score is above the threshold.")
    return (f"The cheapest threshold on {len(kinds)} hidden score distributions and cost settings, ties and a "
            "case where flagging everything is cheapest among them.")


# -- exercise 4: the served guard -----------------------------------------------------------------


@register(
    "07.runtime",
    points=3,
    title="A served classifier that flags outliers",
    hints=(
        "MLServer imports a custom runtime from the model's folder: the folder holds the runtime's code, the "
        "artefacts it loads and model-settings.json.",
        "The folder needs outlier_guard.py, classifier.joblib, autoencoder.npz and a model-settings.json whose "
        "implementation is outlier_guard.OutlierGuard and whose parameters.extra.threshold is the threshold "
        "you set on clean scores.",
        "The threshold is the 95th percentile of the scores of clean digits the VAE was not trained on (the "
        "calibration half): not a round number, and not a percentile of the outliers' scores.",
    ),
    time_limit=30,  # it starts an MLServer, 3 s on a quiet laptop, far more on a busy one
)
def runtime(answer, rng):
    from labkit.client import Client, InferenceServerError

    folder, settings = read_model_folder(answer)
    name = str(settings.get("name") or folder.name)

    test = load_digits("test")
    chosen = rng.choice(len(test), size=120, replace=False)
    clean, labels = test.X[chosen], test.labels[chosen]
    outliers = np.concatenate([digit_outliers(kind, 40, int(rng.integers(2**32))).reshape(40, 64)
                               for kind in ("noise", "mask", "photo")])
    rows = np.concatenate([clean, outliers]).astype(np.float32)
    order = rng.permutation(len(rows))
    with serve_for_check(model_folder_repository(folder), timeout=8) as server, Client(server, "rest") as client:
        if not client.model_ready(name):
            raise Fail(f"MLServer could not load the model {name!r} from your folder: "
                       f"{server_error_reason(server.logs(200))}")
        try:
            served = client.predict(name, rows[order])
        except InferenceServerError as e:
            raise Fail(f"The server refused a request of {len(rows)} rows of 64 FP32 pixels: {e}") from None
    missing = {"predict", "outlier_score", "is_outlier"} - set(served)
    if missing:
        raise Fail(f"The response lacks the outputs {sorted(missing)}; serve it with the outlier_guard runtime.")
    n = len(rows)
    back = np.empty(n, dtype=int)
    back[order] = np.arange(n)
    predicted = np.asarray(served["predict"]).reshape(-1)[back]
    flags = np.asarray(served["is_outlier"]).reshape(-1)[back].astype(bool)
    n_clean = len(clean)
    accuracy = float((predicted[:n_clean] == labels).mean())
    false_alarms, recall = float(flags[:n_clean].mean()), float(flags[n_clean:].mean())
    if accuracy < 0.8:
        raise Fail(f"The served classifier gets {accuracy:.0%} of hidden clean test digits right; save the "
                   "classifier trained on the digits 0-7 as classifier.joblib.")
    if false_alarms > 0.2:
        raise Fail(f"The server flags {false_alarms:.0%} of hidden clean test digits as outliers; the threshold "
                   "in parameters.extra.threshold should come from a high percentile of clean scores.")
    if recall < 0.7:
        raise Fail(f"The server flags only {recall:.0%} of hidden noisy, blotted and photo images; is the "
                   "threshold too high, or is autoencoder.npz the trained autoencoder?")
    return (f"Served on a fresh MLServer: {accuracy:.0%} of hidden clean digits classified right, "
            f"{false_alarms:.0%} of them flagged, {recall:.0%} of hidden outliers flagged.")
