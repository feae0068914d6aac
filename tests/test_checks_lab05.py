"""Lab 05's checks: the solutions pass on every seed, plausible mistakes fail on every seed, odd answers never raise."""

import json
import shutil
from pathlib import Path

import joblib
import nbformat
import numpy as np
import pandas as pd
import pytest
import shap
from check_seeds import assert_fails_on_every_seed
from fairlearn.metrics import MetricFrame, false_positive_rate, true_positive_rate
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from labkit.checks import check
from labkit.checks.lab05 import PLACEHOLDER

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "labs" / "solutions" / "05_explain_and_audit.ipynb"
RUNTIMES = ROOT / "labs" / "runtimes"
SEEDS = range(20)
ODD_ANSWERS = [None, 0, "text", [1, 2], {"a": 1}, lambda *a: None, lambda *a: 1 / 0]


def solution(name):
    """The function that a solution cell defines, executed from the notebook's source."""
    cell = next(c.source for c in nbformat.read(SOLUTION, as_version=4).cells
                if c.cell_type == "code" and c.source.startswith(f"def {name}("))
    namespace = {"np": np, "pd": pd, "shap": shap, "make_pipeline": make_pipeline, "StandardScaler": StandardScaler,
                 "LogisticRegression": LogisticRegression, "GradientBoostingClassifier": GradientBoostingClassifier,
                 "MetricFrame": MetricFrame, "true_positive_rate": true_positive_rate,
                 "false_positive_rate": false_positive_rate}
    exec(cell, namespace)
    return namespace[name]


def passes_on_every_seed(name, answer, seeds=SEEDS):
    for seed in seeds:
        feedback = check(name, answer, seed=seed)
        assert feedback.status == "passed", (seed, feedback.message)


def fails_on_every_seed(name, answer, words=""):
    for seed in SEEDS:
        feedback = check(name, answer, seed=seed)
        assert feedback.status == "failed", (seed, feedback.message)
        assert words in feedback.message, (seed, feedback.message)


# -- the runtime file has one source: the solution notebook's %%writefile cell ---------------------------------


def test_reference_runtime_is_the_notebook_cell():
    cells = [c.source for c in nbformat.read(SOLUTION, as_version=4).cells if c.source.startswith("%%writefile")]
    assert len(cells) == 1
    head, body = cells[0].split("\n", 1)
    assert head.endswith("explainer_runtime.py")
    assert (RUNTIMES / "explainer_runtime.py").read_text() == body + "\n", "copy the %%writefile cell to labs/runtimes"


def test_student_notebook_does_not_hand_out_the_runtime():
    student = nbformat.read(ROOT / "labs" / SOLUTION.name, as_version=4)
    cell = next(c.source for c in student.cells if c.source.startswith("%%writefile"))
    assert cell.count(PLACEHOLDER) == 2 and "model_output=" not in cell


@pytest.mark.parametrize("name", ["05.linear_shap", "05.top_features", "05.runtime", "05.equalised_odds"])
def test_placeholder_and_odd_answers(name):
    assert check(name, ...).status == "not_attempted"
    for odd in ODD_ANSWERS:
        feedback = check(name, odd)
        assert feedback.status in ("failed", "not_attempted"), (odd, feedback)


# -- exercise 1 ----------------------------------------------------------------------------------------------


def linear_variant(background_of="train", scale_rows=True, output="log_odds", masker="all"):
    def explain_linear(X_train, y_train, rows):
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
        scaler = pipeline[0]
        background = scaler.transform(X_train if background_of == "train" else rows)
        data = shap.maskers.Independent(background, max_samples=len(background)) if masker == "all" else background
        explanation = shap.LinearExplainer(pipeline[-1], data)(scaler.transform(rows) if scale_rows else rows)
        out = pipeline.decision_function(rows) if output == "log_odds" else pipeline.predict_proba(rows)[:, 1]
        return {"base_value": explanation.base_values, "shap_values": explanation.values, "log_odds": out}

    return explain_linear


def test_linear_shap_solution_passes_on_every_seed():
    passes_on_every_seed("05.linear_shap", solution("explain_linear"))
    for seed in range(3):  # base values once per row, as the Explanation holds them, are fine too
        assert check("05.linear_shap", linear_variant(), seed=seed).status == "passed"


@pytest.mark.parametrize("mistake, words", [
    (dict(masker="default"), "not the exact SHAP values"),  # 100 sampled background rows, not all
    (dict(scale_rows=False), "misses its log-odds"),  # raw rows into the regression of scaled ones
    (dict(output="probability"), "probabilities"),
    (dict(background_of="rows"), "not the exact SHAP values"),  # explained against the rows themselves
], ids=["sampled-background", "unscaled-rows", "probabilities", "rows-as-background"])
def test_linear_shap_mistakes_fail_on_every_seed(mistake, words):
    fails_on_every_seed("05.linear_shap", linear_variant(**mistake), words)


# -- exercise 2 ----------------------------------------------------------------------------------------------


def ranking_variant(kind):
    def rank_features(X_train, y_train, rows, names):
        model = GradientBoostingClassifier(n_estimators=50, max_depth=2, random_state=0).fit(X_train, y_train)
        values = shap.TreeExplainer(model)(rows).values
        score = {"signed": values.mean(axis=0), "abs-of-mean": np.abs(values.mean(axis=0)),
                 "impurity": model.feature_importances_, "ascending": np.abs(values).mean(axis=0),
                 "first-row": np.abs(values[0]), "sum": np.abs(values).sum(axis=0)}[kind]
        return pd.Series(score, index=names).sort_values(ascending=kind == "ascending")

    return rank_features


def test_top_features_solution_passes_on_every_seed():
    passes_on_every_seed("05.top_features", solution("rank_features"))


@pytest.mark.parametrize("kind", ["signed", "abs-of-mean", "impurity", "ascending", "first-row", "sum"])
def test_top_features_mistakes_fail_on_every_seed(kind):
    assert_fails_on_every_seed("05.top_features", ranking_variant(kind), "place|model of the recipe")


def recipe_variant(**changes):
    """The recipe with one setting changed: another model, whose ranking is almost the same."""
    def rank_features(X_train, y_train, rows, names):
        recipe = {"n_estimators": 50, "max_depth": 2, "random_state": 0, **changes}
        model = GradientBoostingClassifier(**{k: v for k, v in recipe.items() if v is not None}).fit(X_train, y_train)
        importance = np.abs(shap.TreeExplainer(model)(rows).values).mean(axis=0)
        return pd.Series(importance, index=names).sort_values(ascending=False)

    return rank_features


@pytest.mark.parametrize("changes", [{"n_estimators": 51}, {"random_state": 1}, {"random_state": None},
                                     {"max_depth": 3}], ids=["51-trees", "random-state-1", "no-state", "depth-3"])
def test_top_features_another_model_fails_on_every_seed(changes):
    assert_fails_on_every_seed("05.top_features", recipe_variant(**changes), "place|model of the recipe")


def test_top_features_needs_a_series_of_every_name():
    fails_on_every_seed("05.top_features", lambda X, y, rows, names: pd.Series(1.0, index=names[:5]), "each of the")
    fails_on_every_seed("05.top_features", lambda X, y, rows, names: list(names), "pandas Series")


# -- exercise 4 ----------------------------------------------------------------------------------------------


def report_variant(kind):
    """An equalised odds report with one mistake in it, built by hand (pandas) as a student might."""

    def equalised_odds_report(y_true, y_pred, groups):
        frame = pd.DataFrame({"t": np.asarray(y_true), "p": np.asarray(y_pred), "g": np.asarray(groups)})
        by = frame.groupby(["g", "t"])["p"].mean().unstack("t")
        table = pd.DataFrame({"TPR": by[1], "FPR": by[0]})
        if kind == "fnr":  # the false negative rate where the true positive rate belongs
            table["TPR"] = 1 - table["TPR"]
        elif kind == "swapped":  # TPR among the true 0s, FPR among the true 1s
            table = table.rename(columns={"TPR": "FPR", "FPR": "TPR"})
        elif kind == "share-of-group":  # predicted 1 and true 1 among all of the group's rows
            size = frame.groupby("g").size()
            table["TPR"] = frame[frame.t == 1].groupby("g")["p"].sum() / size
            table["FPR"] = frame[frame.t == 0].groupby("g")["p"].sum() / size
        elif kind == "precision":  # true 1 among the predicted 1s
            table["TPR"] = frame[frame.p == 1].groupby("g")["t"].mean()
        spread = table.max() - table.min()
        rate = {"tpr-only": "TPR", "smaller-spread": spread.idxmin()}.get(kind, spread.idxmax())
        difference = float(spread[rate])
        if kind == "mean-of-spreads":
            difference = float(spread.mean())
        elif kind == "vs-overall":
            overall = pd.Series({"TPR": frame[frame.t == 1].p.mean(), "FPR": frame[frame.t == 0].p.mean()})
            difference = float((table - overall).abs().max().max())
        low, high = table[rate].idxmin(), table[rate].idxmax()
        if kind == "mixed-groups":  # the lowest TPR and the highest FPR, whichever rate makes the gap
            low, high = table["TPR"].idxmin(), table["FPR"].idxmax()
        elif kind == "reversed":
            low, high = high, low
        return {"rates": table, "difference": difference, "rate": rate, "groups": (low, high)}

    return equalised_odds_report


def test_equalised_odds_solution_passes_on_every_seed():
    passes_on_every_seed("05.equalised_odds", solution("equalised_odds_report"))
    passes_on_every_seed("05.equalised_odds", report_variant("right"), seeds=range(5))  # by hand, no fairlearn


EQUALISED_ODDS_MISTAKES = {
    "tpr-only": "'difference'|'rate'", "smaller-spread": "'difference'|'rate'", "fnr": "the TPR of group",
    "swapped": "of group",
    "share-of-group": "of group", "precision": "the TPR of group", "mean-of-spreads": "'difference'",
    "vs-overall": "'difference'", "mixed-groups": "'groups'", "reversed": "'groups'",
}


@pytest.mark.parametrize("kind", list(EQUALISED_ODDS_MISTAKES))
def test_equalised_odds_mistakes_fail_on_every_seed(kind):
    assert_fails_on_every_seed("05.equalised_odds", report_variant(kind), EQUALISED_ODDS_MISTAKES[kind])


def test_equalised_odds_hidden_audits_are_exact_and_without_ties():
    """The hidden audits realise their rates exactly, no two groups tie in a rate, the spreads differ, and the
    other rate's extremes are on other groups than the rate that makes the gap (so mixing is seen)."""
    from labkit.checks.lab05 import _audit_case, _true_report

    rng = np.random.default_rng(0)
    for _ in range(200):
        n_groups, dominant = int(rng.integers(2, 5)), str(rng.choice(["TPR", "FPR"]))
        report = _true_report(*_audit_case(rng, n_groups, dominant))
        assert report["rate"] == dominant
        other = "FPR" if dominant == "TPR" else "TPR"
        spreads = {r: max(v.values()) - min(v.values()) for r, v in report["rates"].items()}
        assert spreads[dominant] - spreads[other] > 0.01
        for rate, values in report["rates"].items():
            ordered = sorted(values.values())
            assert np.diff(ordered).min() > 0.02, rate
        lowest = {r: min(v, key=v.get) for r, v in report["rates"].items()}
        highest = {r: max(v, key=v.get) for r, v in report["rates"].items()}
        assert lowest[other] != lowest[dominant] and highest[other] != highest[dominant]


# -- exercise 3: the check serves the folder (seed-independent coverage: a boosting model and a forest always) ---

RUNTIME_SEEDS = range(2)


def runtime_folder(path, source):
    from labkit.data import load_breast_cancer

    data = load_breast_cancer()
    model = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0).fit(data.X.values, data.y)
    path.mkdir(parents=True)
    joblib.dump(model, path / "model.joblib")
    np.save(path / "background.npy", data.X.values[:10])
    (path / "explainer_runtime.py").write_text(source)
    (path / "model-settings.json").write_text(json.dumps({
        "name": "explained", "implementation": "explainer_runtime.ExplainedModel",
        "parameters": {"uri": "./model.joblib", "extra": {"background": "background.npy"}}}))
    return path


REFERENCE = (RUNTIMES / "explainer_runtime.py").read_text()
PROBABILITY = ', feature_perturbation="interventional",\n                                  model_output="probability")'
VALIDATION = REFERENCE[REFERENCE.index("        if rows.ndim != 2"):REFERENCE.index("        return rows\n")]
RUNTIME_MISTAKES = {
    "every-class": (REFERENCE.replace("if values.ndim == 3:", "if False:"), "refused with 500"),
    "log-odds": (REFERENCE.replace(PROBABILITY, ', feature_perturbation="interventional")'),
                 "misses P(class 1)"),
    "class-0": (REFERENCE.replace("values[..., 1], base.reshape(len(rows), -1)[:, 1]",
                                  "values[..., 0], base.reshape(len(rows), -1)[:, 0]"), "misses P(class 1)"),
    "no-validation": (REFERENCE.replace(VALIDATION, ""), "400"),
}


def test_runtime_solution_passes_with_a_relative_path(tmp_path, monkeypatch):
    runtime_folder(tmp_path / "work" / "explained", REFERENCE)
    monkeypatch.chdir(tmp_path)
    for seed in RUNTIME_SEEDS:
        feedback = check("05.runtime", "work/explained", seed=seed)
        assert feedback.status == "passed", feedback.message


@pytest.mark.parametrize("kind", list(RUNTIME_MISTAKES))
def test_runtime_mistakes_fail(tmp_path, kind):
    source, words = RUNTIME_MISTAKES[kind]
    assert source != REFERENCE
    folder = runtime_folder(tmp_path / "m", source)
    for seed in RUNTIME_SEEDS:
        feedback = check("05.runtime", str(folder), seed=seed)
        assert feedback.status == "failed" and words in feedback.message, (seed, feedback.message)


def test_runtime_placeholder_is_not_attempted_and_missing_folder_fails(tmp_path):
    start = REFERENCE.index("        ### BEGIN SOLUTION")
    end = REFERENCE.index("### END SOLUTION") + len("### END SOLUTION")
    folder = runtime_folder(tmp_path / "m", REFERENCE[:start] + "        " + PLACEHOLDER + REFERENCE[end:])
    assert check("05.runtime", str(folder)).status == "not_attempted"
    shutil.rmtree(folder)
    feedback = check("05.runtime", str(folder))
    assert feedback.status == "failed" and "model-settings.json" in feedback.message
