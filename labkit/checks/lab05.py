"""Checks of lab 05, "Explain and audit".

The hidden models are trained by the check on hidden rows and features of the course's data, with the recipe
the exercise states: a model cannot cross from the grader to a student's kernel, but its training data can, so
the student's code trains the same model and the check compares what it says about hidden rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from labkit.checks import (
    Fail, NotAttempted, expect_function, model_folder_repository, register, safe_repr, serve_for_check,
    server_error_reason,
)
from labkit.data import load_breast_cancer

PLACEHOLDER = 'raise NotImplementedError("Replace this line with your code")'
TREE_RECIPE = {"n_estimators": 50, "max_depth": 2, "random_state": 0}  # exercise 2's model, as the lab states it


def _array(value, shape: tuple, call: str, what: str) -> np.ndarray:
    """``value`` as a finite float array of ``shape``, or a ``Fail`` that says what came back."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Fail(f"{call}: {what} should be numbers, not {safe_repr(value)}.") from None
    if array.size == math.prod(shape) and array.shape != shape and array.squeeze().shape == tuple(
            s for s in shape if s != 1):
        array = array.reshape(shape)  # (n, 1) for (n,) and the like
    if array.shape != shape:
        raise Fail(f"{call}: {what} has shape {array.shape}; expected {shape}.")
    if not np.isfinite(array).all():
        raise Fail(f"{call}: {what} contains NaN or infinity.")
    return array


def _base_value(value, n: int, call: str) -> float:
    """One base value: a number, or the same number once per row (as ``Explanation.base_values`` holds it)."""
    try:
        array = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise Fail(f"{call}: 'base_value' should be a number, not {safe_repr(value)}.") from None
    if array.size not in (1, n) or not np.isfinite(array).all() or np.ptp(array) > 1e-9:
        raise Fail(f"{call}: 'base_value' should be one number, the explainer's expected value (got "
                   f"{safe_repr(value)}).")
    return float(array[0])


def _hidden_table(rng, n_train: int, n_rows: int):
    """Hidden rows and features of the breast cancer data: training rows, other rows to explain, names."""
    data = load_breast_cancer()
    d = int(rng.integers(6, 16))
    columns = np.sort(rng.choice(data.X.shape[1], size=d, replace=False))
    order = rng.permutation(len(data.y))
    X = data.X.to_numpy()[:, columns]
    y = data.y.to_numpy()
    train, rest = order[:n_train], order[n_train:]
    rows = X[rng.choice(rest, size=n_rows, replace=False)] * rng.normal(1, 0.02, size=(n_rows, d))
    return X[train], y[train], rows, [str(c) for c in data.X.columns[columns]]


# -- exercise 1: exact SHAP values of lab 01's pipeline -----------------------------------------------------


def _linear_truth(X_train, y_train, rows):
    """Lab 01's pipeline trained on the hidden rows, and its exact SHAP values in log-odds against the whole
    training set (for a linear model on independent features: coefficient times distance to the mean)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    scaler, linear = model[0], model[-1]
    background = scaler.transform(X_train).mean(axis=0)
    values = linear.coef_[0] * (scaler.transform(rows) - background)
    base = float(linear.intercept_[0] + linear.coef_[0] @ background)
    return base, values, model.decision_function(rows)


@register(
    "05.linear_shap",
    points=2,
    title="Exact SHAP values of lab 01's pipeline, and additivity",
    hints=(
        "SHAP values of a linear model are exact: each feature's value is its weight times how far the row is "
        "from the background's mean, in the units the model sees (after scaling).",
        "Additivity is the test: base value plus the sum of a row's SHAP values must give the model's output for "
        "that row. Check which output: a logistic regression's log-odds, not its probability.",
        "Fit the pipeline, then shap.LinearExplainer(pipeline[-1], shap.maskers.Independent(Z, max_samples="
        "len(Z))) with Z the scaled training rows; explain the scaled rows. The output explained is the "
        "pipeline's decision_function (log-odds), and base value plus each row's values must equal it.",
    ),
)
def linear_shap(answer, rng):
    expect_function(answer, "explain_linear", "training rows, their labels and the rows to explain")
    for n_rows in rng.permutation([1, int(rng.integers(4, 16)), int(rng.integers(4, 16))]):  # one row: the least
        X_train, y_train, rows, _ = _hidden_table(rng, int(rng.integers(180, 360)), int(n_rows))
        n, d = rows.shape
        call = f"explain_linear(<{len(X_train)} training rows of {d} features>, y_train, <{n} rows>)"
        got = answer(X_train.copy(), y_train.copy(), rows.copy())
        try:
            got = dict(got)
            base_value, values, log_odds = got["base_value"], got["shap_values"], got["log_odds"]
        except (TypeError, ValueError, KeyError):
            raise Fail(f"{call} returned {safe_repr(got)}; return a dict with 'base_value' (a number), "
                       "'shap_values' (rows × features) and 'log_odds' (one per row).") from None
        base_value = _base_value(base_value, n, call)
        values = _array(values, (n, d), call, "'shap_values'")
        log_odds = _array(log_odds, (n,), call, "'log_odds'")
        true_base, true_values, true_log_odds = _linear_truth(X_train, y_train, rows)
        if not np.allclose(log_odds, true_log_odds, rtol=0, atol=1e-6):
            hint = (" They look like probabilities: LinearExplainer explains the log-odds." if
                    np.all((log_odds >= 0) & (log_odds <= 1)) else "")
            raise Fail(f"{call}: 'log_odds' are not the pipeline's decision_function on the rows.{hint}")
        gap = float(np.abs(base_value + values.sum(axis=1) - log_odds).max())
        if gap > 1e-6:
            raise Fail(f"{call}: base value plus each row's SHAP values misses its log-odds by up to {gap:.3g}; "
                       "SHAP values are additive, so this says they are not the explainer's (or not of these "
                       "rows, or not of this model).")
        if abs(float(base_value) - true_base) > 1e-6 or not np.allclose(values, true_values, rtol=0, atol=1e-6):
            raise Fail(f"{call}: the values add up, but they are not the exact SHAP values against the whole "
                       "training set (off by up to "
                       f"{float(np.abs(values - true_values).max()):.3g}). Is every training row in the "
                       "background (max_samples), and are the rows scaled as the model sees them?")
    return "Exact values and base values for 3 hidden models and their hidden rows; they add up to the log-odds."


# -- exercise 2: rank the features of a hidden model -------------------------------------------------------


def _tree_ranking(X_train, y_train, rows):
    import shap
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(**TREE_RECIPE).fit(X_train, y_train)
    return np.abs(shap.TreeExplainer(model)(rows).values).mean(axis=0)


@register(
    "05.top_features",
    points=2,
    title="Rank features by mean |SHAP| for a hidden model",
    hints=(
        "A global ranking averages local explanations: one SHAP value per row and feature, then one number per "
        "feature over all the rows. Signs cancel out, so average magnitudes.",
        "Return a pandas Series of mean |SHAP| values indexed by feature name, largest first, for the model the "
        "exercise describes, explained with the exact explainer for trees and no background.",
        "Train GradientBoostingClassifier(n_estimators=50, max_depth=2, random_state=0), explain the rows with "
        "shap.TreeExplainer(model), average the absolute values over the rows (axis=0), put them in a "
        "pd.Series indexed by the names, and sort it with sort_values(ascending=False).",
    ),
)
def top_features(answer, rng):
    import pandas as pd

    expect_function(answer, "rank_features", "training rows, their labels, rows to explain and feature names")
    for case in range(3):
        X_train, y_train, rows, names = _hidden_table(rng, int(rng.integers(200, 400)), int(rng.integers(60, 120)))
        if case == 0:  # exact copies of the most important feature: tied splits, which random_state breaks
            top = int(np.argmax(_tree_ranking(X_train, y_train, rows)))
            copies = int(rng.integers(2, 4))
            X_train, rows = (np.c_[a, np.repeat(a[:, [top]], copies, axis=1)] for a in (X_train, rows))
            names = names + [f"{names[top]} (copy {i + 1})" for i in range(copies)]
        call = f"rank_features(<{len(X_train)} rows of {len(names)} features>, y_train, <{len(rows)} rows>, names)"
        got = answer(X_train.copy(), y_train.copy(), rows.copy(), list(names))
        try:
            series = got if isinstance(got, pd.Series) else pd.Series(dict(got))
            got_names, got_values = [str(n) for n in series.index], np.asarray(series.to_numpy(), dtype=np.float64)
        except Exception:  # anything that is no Series of numbers
            raise Fail(f"{call} returned {safe_repr(got)}; return a pandas Series: each feature's mean |SHAP| "
                       "value, indexed by its name, largest first.") from None
        if sorted(got_names) != sorted(names):
            raise Fail(f"{call} should hold each of the {len(names)} feature names once (got {len(got_names)} "
                       f"names, such as {safe_repr(got_names[:3])}).")
        importance = dict(zip(names, _tree_ranking(X_train, y_train, rows), strict=True))
        expected = sorted(names, key=importance.get, reverse=True)
        for place in range(len(names)):  # every place; a swap of two (nearly) tied features is no mistake
            if abs(importance[got_names[place]] - importance[expected[place]]) > 1e-9 * max(importance.values()):
                raise Fail(f"{call}: place {place + 1} should hold {expected[place]!r} (mean |SHAP| "
                           f"{importance[expected[place]]:.3g}), not {got_names[place]!r} "
                           f"({importance[got_names[place]]:.3g}). Rank by the mean of the absolute values.")
        for name, value in zip(got_names, got_values, strict=True):
            if not math.isclose(value, importance[name], rel_tol=1e-7, abs_tol=1e-12):
                raise Fail(f"{call}: the mean |SHAP| of {name!r} is {importance[name]:.6g}, not {value:.6g}. Is it "
                           "the model of the recipe (n_estimators=50, max_depth=2, random_state=0), explained by "
                           "shap.TreeExplainer(model) with no background?")
    return "Each feature's mean |SHAP|, in order, for 3 hidden models on hidden rows (one with copied features)."


# -- exercise 3: the explainer runtime --------------------------------------------------------------------------


def _runtime_folder(answer):
    """(folder, name, module file) of the student's model folder, or a Fail / NotAttempted."""
    if not isinstance(answer, str):
        raise Fail(f"Pass the path of your model folder as a string, not {safe_repr(answer)}.")
    folder = Path(answer).resolve()
    try:
        settings = json.loads((folder / "model-settings.json").read_text())
        module, _, _ = str(settings["implementation"]).rpartition(".")
        name = str(settings.get("name") or folder.name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise Fail(f"There is no readable model-settings.json with an implementation in {answer!r}; run the "
                   "cell that builds the model folder.") from None
    source = folder / f"{module}.py"
    if not source.is_file():
        raise Fail(f"The runtime module {module}.py is not in the model folder; copy it there.")
    if PLACEHOLDER in source.read_text(errors="replace"):
        raise NotAttempted("Your runtime still raises NotImplementedError: write _build_explainer and _explain, "
                           "run their cell, the cell that builds the model folder, then this one.")
    return folder, name, settings, source


def _hidden_tree_models(rng, X, y) -> dict:
    """Two hidden models, always both kinds: boosting gives one set of values, a forest one per class."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

    models = {
        "hidden-boosting": GradientBoostingClassifier(n_estimators=int(rng.integers(20, 60)),
                                                      max_depth=int(rng.integers(1, 4)),
                                                      random_state=int(rng.integers(1000))),
        "hidden-forest": RandomForestClassifier(n_estimators=int(rng.integers(10, 40)),
                                                max_depth=int(rng.integers(2, 6)),
                                                random_state=int(rng.integers(1000))),
    }
    for model in models.values():
        rows = rng.choice(len(y), size=int(rng.integers(250, 450)), replace=False)
        model.fit(X[rows], y[rows])
    return models


def _bad_requests(n_features, max_rows, rng):
    def tensor(values, shape, datatype="FP64"):
        return {"inputs": [{"name": "features", "shape": shape, "datatype": datatype, "data": values}]}

    wrong = int(rng.choice([c for c in range(2, 2 * n_features) if c != n_features]))
    row = rng.normal(10, 3, size=n_features).tolist()
    with_nan = list(row)
    with_nan[int(rng.integers(n_features))] = None  # JSON has no NaN: clients send null, which decodes to NaN
    candidates = [
        (f"{wrong} features instead of {n_features}", tensor([0.5] * wrong, [1, wrong])),
        ("a NaN", tensor(with_nan, [1, n_features])),
        ("strings", tensor(["x"] * n_features, [1, n_features], "BYTES")),
        ("an empty batch", tensor([], [0, n_features])),
        (f"more rows than max_rows ({max_rows})", tensor([0.5] * ((max_rows + 1) * n_features),
                                                          [max_rows + 1, n_features])),
        ("a declared shape larger than the data", tensor(row, [3, n_features])),
    ]
    return [candidates[i] for i in sorted(rng.choice(len(candidates), size=4, replace=False))]


def _float32_exact(rows: np.ndarray) -> np.ndarray:
    """Rows whose values float32 holds exactly. scikit-learn's trees compare float32 inputs; if shap's traversal
    compares float64 ones, a value between the two roundings of a threshold could take different branches. That is
    the suspected cause of one right answer missing P(class 1) by 0.002 on a hidden forest (not reproduced)."""
    return np.asarray(rows, dtype=np.float32).astype(np.float64)


@register(
    "05.runtime",
    points=4,
    title="A runtime that explains every prediction",
    hints=(
        "Build the explainer once in load(), never per request, and return its values as extra outputs beside "
        "the prediction, with the names and shapes your model-settings.json declares.",
        "Every row's base value plus its SHAP values must add up to the probability the runtime returns for that "
        "row; refuse a request with the wrong shape or type with a 400 that says what was expected.",
        "Build the explainer once: shap.TreeExplainer(model, background, feature_perturbation='interventional', "
        "model_output='probability'). In _explain, keep class 1's values and base value when the explainer "
        "returns one set per class (random forests), and return one base value per row.",
    ),
    time_limit=45,  # an MLServer that imports shap, 3 models: 5 s on a quiet laptop, far more on a busy one
)
def runtime(answer, rng):
    import shutil

    import httpx
    import joblib
    import shap

    from labkit.client import Client, InferenceServerError

    folder, name, settings, source = _runtime_folder(answer)
    data = load_breast_cancer()
    X, y = data.X.to_numpy(), data.y.to_numpy()
    # The repository: the student's folder as it is, and two hidden models served by copies of the same runtime.
    repository = model_folder_repository(folder)
    max_rows = int(rng.integers(20, 60))
    models, explainers = _hidden_tree_models(rng, X, y), {}
    for hidden_name, model in models.items():
        hidden = repository / hidden_name
        hidden.mkdir()
        background = _float32_exact(X[rng.choice(len(X), size=int(rng.integers(5, 16)), replace=False)])
        joblib.dump(model, hidden / "model.joblib")
        np.save(hidden / "background.npy", background)
        shutil.copy(source, hidden / source.name)
        (hidden / "model-settings.json").write_text(json.dumps({
            "name": hidden_name, "implementation": settings["implementation"],
            "parameters": {"uri": "./model.joblib", "extra": {"background": "background.npy", "max_rows": max_rows}},
        }))
        explainers[hidden_name] = shap.TreeExplainer(model, background, feature_perturbation="interventional",
                                                     model_output="probability")

    with serve_for_check(repository, timeout=25) as server:
        clients = {}
        try:
            clients = {"rest": Client(server, "rest", timeout=8), "grpc": Client(server, "grpc", timeout=8)}
            for served in (name, *models):
                if not clients["rest"].model_ready(served):
                    raise Fail(f"MLServer could not load {served!r}: {server_error_reason(server.logs(200))}")
            try:
                clients["rest"].predict(name, X[:2])
            except InferenceServerError as e:
                raise Fail(f"Your model {name!r} refused two rows of the data: {e.reason[:300]}") from None
            for hidden_name, protocol in [(m, p) for m in models for p in ("rest", "grpc")]:
                model = models[hidden_name]
                rows = X[rng.choice(len(X), size=int(rng.integers(1, 12)), replace=False)]
                rows = _float32_exact(rows * rng.normal(1, 0.03, size=rows.shape))
                _explained_rows(clients[protocol], hidden_name, model, explainers[hidden_name], rows,
                                f"A request of {len(rows)} hidden rows to a hidden {type(model).__name__} "
                                f"over {protocol}")
            refused = []
            for what, payload in _bad_requests(X.shape[1], max_rows, rng):
                try:
                    clients["rest"].infer("hidden-boosting", payload)
                except InferenceServerError as e:
                    if e.status != 400 or not str(e.reason).strip():
                        raise Fail(f"A request with {what} got {e.status}: {e.reason[:300]}; expected 400 with a "
                                   "message that says what was wrong.") from None
                    refused.append(what)
                except httpx.TransportError:
                    raise Fail(f"A request with {what} got no answer: the server closed the connection, as when the "
                               "runtime crashes its process. Refuse it with a 400 before it reaches the "
                               "explainer.") from None
                else:
                    raise Fail(f"A request with {what} was answered; refuse it with a 400.")
            if not clients["rest"].model_ready("hidden-boosting"):
                raise Fail("After the bad requests the server no longer serves the model.")
        finally:
            for client in clients.values():
                client.close()
    return ("On a fresh MLServer, a hidden gradient boosting model and a hidden random forest served by your "
            "runtime: hidden requests over REST and gRPC got exact SHAP values that add up to P(class 1); "
            f"{len(refused)} bad requests got a 400.")


def _explained_rows(client, name, model, explainer, rows, call):
    """A Fail unless the served model explains ``rows`` exactly, additively, beside the right probabilities."""
    import httpx

    from labkit.client import InferenceServerError

    try:
        got = client.predict(name, rows)
    except InferenceServerError as e:
        raise Fail(f"{call} was refused with {e.status}: {e.reason[:300]}") from None
    except httpx.TransportError:
        raise Fail(f"{call} got no answer: the server closed the connection, as when the runtime crashes its "
                   "process.") from None
    missing = {"probabilities", "shap_values", "base_value"} - set(got)
    if missing:
        raise Fail(f"{call}: the response lacks the outputs {sorted(missing)}.")
    n, d = rows.shape
    proba = _array(got["probabilities"], (n, 2), call, "'probabilities'")
    values = _array(got["shap_values"], (n, d), call, "'shap_values'")
    base = _array(got["base_value"], (n, 1), call, "'base_value'").ravel()
    if not np.allclose(proba, model.predict_proba(rows), rtol=0, atol=1e-9):
        raise Fail(f"{call}: 'probabilities' are not the model's predict_proba.")
    truth = explainer(rows)
    true_values = truth.values[..., 1] if truth.values.ndim == 3 else truth.values
    true_base = truth.base_values[..., 1] if np.ndim(truth.base_values) == 2 else truth.base_values
    # An answer need not add up better than shap's own exact explainer does on these rows.
    allowed = 1e-6 + float(np.abs(np.ravel(true_base) + true_values.sum(axis=1) - proba[:, 1]).max())
    gap = float(np.abs(base + values.sum(axis=1) - proba[:, 1]).max())
    if gap > allowed:
        raise Fail(f"{call}: base value plus SHAP values misses P(class 1) by up to {gap:.3g}. Explain the "
                   "probability (model_output='probability'), of class 1.")
    if not np.allclose(values, true_values, rtol=0, atol=1e-6):
        raise Fail(f"{call}: the values add up but are not the exact SHAP values against the background in "
                   "background.npy; pass it to TreeExplainer (interventional).")


# -- exercise 4: where equalised odds breaks -----------------------------------------------------------------

RATES = ("TPR", "FPR")
GROUP_NAMES = ("north", "south", "east", "west", "urban", "rural", "A", "B", "C", "D")


def _spread_values(rng, n: int, low: float, spread: float) -> np.ndarray:
    """``n`` rates from ``low`` to ``low + spread``, interior ones at least 0.05 from each other and the ends."""
    inner = low + spread * (np.arange(1, n - 1) / (n - 1)) + rng.uniform(-0.02, 0.02, size=n - 2)
    return np.r_[low, low + spread, inner]


def _audit_case(rng, n_groups: int, dominant: str):
    """Labels, predictions and groups whose rates are exactly the drawn ones (a whole number of predicted 1s in
    each group and label). ``dominant`` has the larger spread, by 0.04 to 0.15; the other rate's lowest and
    highest groups are not those of the dominant one, so an answer that takes a group from each rate is seen;
    the groups' names are drawn so that no order of names matches an order of rates."""
    names = [str(g) for g in rng.choice(GROUP_NAMES, size=n_groups, replace=False)]
    spread = float(rng.uniform(0.3, 0.45))
    other_spread = spread - float(rng.uniform(0.04, 0.15))
    lows = {"TPR": float(rng.uniform(0.45, 0.5)), "FPR": float(rng.uniform(0.03, 0.08))}
    values = {dominant: _spread_values(rng, n_groups, lows[dominant], spread)}
    other = "FPR" if dominant == "TPR" else "TPR"
    values[other] = _spread_values(rng, n_groups, lows[other], other_spread)
    # values[rate][k] belongs to group order[rate][k]: the dominant's extremes at random groups, the other's not
    # on the same groups
    order = {dominant: rng.permutation(n_groups)}
    while True:
        order[other] = rng.permutation(n_groups)
        if order[other][0] != order[dominant][0] and order[other][1] != order[dominant][1]:
            break
    positives = rng.integers(40, 160, size=n_groups)
    negatives = rng.integers(40, 240, size=n_groups)
    rates = {rate: np.empty(n_groups) for rate in RATES}
    y_true, y_pred, groups = [], [], []
    for rate in RATES:
        rates[rate][order[rate]] = values[rate]
    for g, name in enumerate(names):
        hits = int(round(rates["TPR"][g] * positives[g]))
        alarms = int(round(rates["FPR"][g] * negatives[g]))
        y_true.append(np.r_[np.ones(positives[g]), np.zeros(negatives[g])])
        y_pred.append(np.r_[rng.permutation(np.r_[np.ones(hits), np.zeros(positives[g] - hits)]),
                            rng.permutation(np.r_[np.ones(alarms), np.zeros(negatives[g] - alarms)])])
        groups += [name] * int(positives[g] + negatives[g])
    shuffle = rng.permutation(len(groups))
    return (np.concatenate(y_true).astype(int)[shuffle], np.concatenate(y_pred).astype(int)[shuffle],
            [groups[i] for i in shuffle])


def _true_report(y_true, y_pred, groups) -> dict:
    """The per-group rates, the equalised odds difference, the rate that makes it and its (lowest, highest)
    groups, computed with numpy (no ties: the hidden cases are built without)."""
    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    names = sorted(set(groups.tolist()))
    table = {rate: {} for rate in RATES}
    for name in names:
        mine = groups == name
        table["TPR"][name] = float(y_pred[mine & (y_true == 1)].mean())
        table["FPR"][name] = float(y_pred[mine & (y_true == 0)].mean())
    spreads = {rate: max(v.values()) - min(v.values()) for rate, v in table.items()}
    rate = max(RATES, key=spreads.get)
    return {"rates": table, "difference": spreads[rate], "rate": rate,
            "groups": (min(table[rate], key=table[rate].get), max(table[rate], key=table[rate].get))}


def _rates_table(value, names, call: str) -> dict:
    """``{"TPR": {group: rate}, "FPR": {...}}`` from a DataFrame (one row per group, columns TPR and FPR, as
    MetricFrame.by_group gives it), its transpose, or a dict of the same; a ``Fail`` otherwise."""
    import pandas as pd

    try:
        if not isinstance(value, (pd.DataFrame, dict)) and hasattr(value, "to_dict"):
            value = value.to_dict()  # a DataFrame in the student's kernel (the grader's bridge) comes as plain data
        frame = value if isinstance(value, pd.DataFrame) else pd.DataFrame(value)
        if not set(RATES) <= {str(c) for c in frame.columns} and set(RATES) <= {str(i) for i in frame.index}:
            frame = frame.T
        frame = frame.rename(columns=str, index=str)
        table = {rate: {name: float(frame.loc[name, rate]) for name in names} for rate in RATES}
    except Exception:  # any shape at all: say what is expected
        raise Fail(f"{call}: 'rates' should be a table with one row per group ({sorted(names)}) and the columns "
                   f"'TPR' and 'FPR', as MetricFrame.by_group gives it; got {safe_repr(value)}.") from None
    if len(frame.index) != len(names):
        raise Fail(f"{call}: 'rates' has {len(frame.index)} rows; one per group, {len(names)}.")
    return table


@register(
    "05.equalised_odds",
    points=2,
    title="Where equalised odds breaks: the rate and the groups",
    hints=(
        "Equalised odds asks that the true positive rate and the false positive rate be the same in every group. "
        "The difference is the larger of the two spreads (largest minus smallest over the groups); the report "
        "says which rate makes it and between which two groups.",
        "TPR: predicted 1 among the group's true 1s; FPR: predicted 1 among the group's true 0s (not among all "
        "its rows, and not the false negative rate). MetricFrame(metrics={'TPR': true_positive_rate, 'FPR': "
        "false_positive_rate}, ...) gives the table in by_group.",
        "MetricFrame's difference() gives each rate's spread; the rate is the one with the larger spread, and the "
        "groups are that rate's idxmin() and idxmax(), in that order: (lowest, highest).",
    ),
)
def equalised_odds(answer, rng):
    expect_function(answer, "equalised_odds_report", "true labels, predictions and each row's group")
    sizes = [*rng.permutation([2, 3, 4]), int(rng.integers(2, 5)), int(rng.integers(3, 5))]
    dominants = [str(d) for d in rng.permutation(["TPR", "FPR", "TPR", "FPR", str(rng.choice(RATES))])]
    for n_groups, dominant in zip(sizes, dominants, strict=True):
        y_true, y_pred, groups = _audit_case(rng, int(n_groups), dominant)
        names = sorted(set(groups))
        truth = _true_report(y_true, y_pred, groups)
        call = f"equalised_odds_report(<{len(groups)} labels>, <predictions>, <groups {names}>)"
        got = answer(y_true.copy(), y_pred.copy(), list(groups))
        if not isinstance(got, dict) or not {"rates", "difference", "rate", "groups"} <= set(got):
            raise Fail(f"{call} returned {safe_repr(got)}; return a dict with 'rates', 'difference', 'rate' and "
                       "'groups'.")
        table = _rates_table(got["rates"], names, call)
        for rate in RATES:
            for name in names:
                if not math.isclose(table[rate][name], truth["rates"][rate][name], rel_tol=0, abs_tol=1e-9):
                    raise Fail(f"{call}: the {rate} of group {name!r} is {table[rate][name]:.4f}, not "
                               f"{truth['rates'][rate][name]:.4f}. TPR is predicted 1 among the group's true 1s, "
                               "FPR predicted 1 among its true 0s.")
        try:
            difference = float(got["difference"])
        except (TypeError, ValueError):
            raise Fail(f"{call}: 'difference' should be a number, not {safe_repr(got['difference'])}.") from None
        if not math.isclose(difference, truth["difference"], rel_tol=0, abs_tol=1e-9):
            raise Fail(f"{call}: 'difference' is {difference:.4f}; the equalised odds difference is "
                       f"{truth['difference']:.4f}, the larger of the two spreads (largest minus smallest rate "
                       "over the groups).")
        if str(got["rate"]) != truth["rate"]:
            raise Fail(f"{call}: 'rate' is {safe_repr(got['rate'])}; the larger spread is the "
                       f"{truth['rate']}'s here. Name the rate that makes the difference, 'TPR' or 'FPR'.")
        pair = got["groups"]
        if isinstance(pair, str) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise Fail(f"{call}: 'groups' should be the pair (lowest, highest), not {safe_repr(pair)}.")
        if (str(pair[0]), str(pair[1])) != truth["groups"]:
            low, high = truth["groups"]
            raise Fail(f"{call}: 'groups' is {safe_repr(tuple(pair))}; the {truth['rate']} is lowest in {low!r} "
                       f"and highest in {high!r}: give ({low!r}, {high!r}), both of the rate that makes the "
                       "difference.")
    return (f"Right rates, difference, rate and groups on {len(sizes)} hidden audits with 2 to 4 groups, where "
            "either rate made the gap.")
