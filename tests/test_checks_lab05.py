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
                 "LogisticRegression": LogisticRegression, "GradientBoostingClassifier": GradientBoostingClassifier}
    exec(cell, namespace)
    return namespace[name]


def passes_on_every_seed(name, answer):
    for seed in SEEDS:
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
                 "impurity": model.feature_importances_, "ascending": -np.abs(values).mean(axis=0),
                 "first-row": np.abs(values[0])}[kind]
        return [names[i] for i in np.argsort(-score)]

    return rank_features


def test_top_features_solution_passes_on_every_seed():
    passes_on_every_seed("05.top_features", solution("rank_features"))


@pytest.mark.parametrize("kind", ["signed", "abs-of-mean", "impurity", "ascending", "first-row"])
def test_top_features_mistakes_fail_on_every_seed(kind):
    fails_on_every_seed("05.top_features", ranking_variant(kind), "place")


def test_top_features_needs_every_name_once():
    fails_on_every_seed("05.top_features", lambda X, y, rows, names: names[:5], "each of the")


# -- exercise 4 ----------------------------------------------------------------------------------------------


def rates(y_true, y_pred, groups):
    frame = pd.DataFrame({"t": y_true, "p": y_pred, "g": groups})
    by_group = frame.groupby(["g", "t"])["p"].mean().unstack("t")
    overall = frame.groupby("t")["p"].mean()
    return by_group[1], by_group[0], overall[1], overall[0]  # TPR, FPR per group; overall TPR, FPR


WRONG_EQUALISED_ODDS = {
    "tpr-only": lambda yt, yp, g: (lambda tpr, fpr, *_: tpr.max() - tpr.min())(*rates(yt, yp, g)),
    "fpr-only": lambda yt, yp, g: (lambda tpr, fpr, *_: fpr.max() - fpr.min())(*rates(yt, yp, g)),
    "mean": lambda yt, yp, g: (lambda tpr, fpr, *_: (tpr.max() - tpr.min() + fpr.max() - fpr.min()) / 2)(
        *rates(yt, yp, g)),
    "vs-overall": lambda yt, yp, g: (lambda tpr, fpr, t, f: max((tpr - t).abs().max(), (fpr - f).abs().max()))(
        *rates(yt, yp, g)),
    "ratio": lambda yt, yp, g: (lambda tpr, fpr, *_: max(1 - tpr.min() / tpr.max(), 1 - fpr.min() / fpr.max()))(
        *rates(yt, yp, g)),
    "accuracy-gap": lambda yt, yp, g: (lambda f: (lambda a: a.max() - a.min())(
        f.assign(ok=f.t == f.p).groupby("g")["ok"].mean()))(pd.DataFrame({"t": yt, "p": yp, "g": g})),
}


def test_equalised_odds_solution_passes_on_every_seed():
    passes_on_every_seed("05.equalised_odds", solution("equalised_odds_difference"))


@pytest.mark.parametrize("kind", list(WRONG_EQUALISED_ODDS))
def test_equalised_odds_mistakes_fail_on_every_seed(kind):
    fails_on_every_seed("05.equalised_odds", WRONG_EQUALISED_ODDS[kind], "fairlearn")


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
