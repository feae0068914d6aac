"""Lab 02's checks: the solutions pass, typical mistakes fail with the right message, odd answers never raise."""

import json
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest
from check_seeds import assert_fails_on_every_seed, assert_passes_on_every_seed
from prometheus_client.parser import text_string_to_metric_families

from labkit.checks import check
from labkit.checks.lab02 import PACKAGES, PLACEHOLDER

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "labs" / "solutions" / "02_custom_runtime.ipynb"
RUNTIMES = ROOT / "labs" / "runtimes"
ODD_ANSWERS = [None, 0, "text", [1, 2], {"a": 1}, lambda *a: None, lambda *a: 1 / 0]


# -- the runtime files have one source: the solution notebook's %%writefile cells ----------------------


def writefile_cells():
    cells = nbformat.read(SOLUTION, as_version=4).cells
    return {Path(c.source.split("\n", 1)[0].split()[-1]).name: c.source.split("\n", 1)[1]
            for c in cells if c.cell_type == "code" and c.source.startswith("%%writefile")}


def test_reference_runtimes_are_the_notebook_cells():
    cells = writefile_cells()
    assert set(cells) == {"diagnosis_runtime.py", "strict_runtime.py"}
    for name, source in cells.items():
        assert (RUNTIMES / name).read_text() == source + "\n", f"copy the %%writefile cell of {name} to labs/runtimes"


def test_student_notebook_does_not_hand_out_the_strict_runtime():
    student = nbformat.read(ROOT / "labs" / SOLUTION.name, as_version=4)
    strict = next(c.source for c in student.cells if c.source.startswith("%%writefile") and "strict" in c.source)
    assert 'raise NotImplementedError("Replace this line with your code")' in strict
    assert "isfinite" not in strict and "InferenceError(" not in strict


# -- solutions and mistakes --------------------------------------------------------------------------------


def solution(name):
    """The function that a solution cell defines, executed from the notebook's source."""
    cell = next(c.source for c in nbformat.read(SOLUTION, as_version=4).cells
                if c.cell_type == "code" and c.source.startswith(f"def {name}("))
    # the names the notebook imported for these functions
    namespace = {"text_string_to_metric_families": text_string_to_metric_families, "version": version}
    exec(cell, namespace)
    return namespace[name]


@pytest.mark.parametrize("name, function", [("02.settings", "make_settings"), ("02.metric_mean", "metric_mean"),
                                            ("02.requirements", "make_requirements")])
def test_solutions_pass_on_every_seed(name, function):
    assert_passes_on_every_seed(name, solution(function))


def settings_mistakes():
    make = solution("make_settings")

    def no_content_type(*args):
        settings = make(*args)
        del settings["outputs"][0]["parameters"]
        return settings

    def two_classes(name, version, class_names, n_features):  # the lab's model has two
        settings = make(name, version, class_names, n_features)
        settings["outputs"][1]["shape"] = [-1, 2]
        return settings

    def sorted_classes(name, version, class_names, n_features):
        return make(name, version, sorted(class_names), n_features)

    def version_in_name(name, version, class_names, n_features):
        settings = make(name, version, class_names, n_features)
        del settings["parameters"]["version"]
        return settings

    def the_labs_features(name, version, class_names, n_features):
        return make(name, version, class_names, 30)

    return {"content type": no_content_type, "'probabilities'": two_classes, "class names": sorted_classes,
            "parameters.version": version_in_name, "one input": the_labs_features}


@pytest.mark.parametrize("words", list(settings_mistakes()))
def test_settings_mistakes_fail_on_every_seed(words):
    assert_fails_on_every_seed("02.settings", settings_mistakes()[words], words)


def metric_mistakes():
    def ignores_the_version(text, metric, model, version):
        for family in text_string_to_metric_families(text):
            if family.name == metric:
                samples = {s.name: s.value for s in family.samples if s.labels.get("model_name") == model}
                return samples[metric + "_sum"] / samples[metric + "_count"] if samples else None
        return None

    def prefix_match(text, metric, model, version):  # "v1" in "v10", "diagnosis" in "diagnosis-2"
        total = count = 0.0
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = s.labels
                if (s.name.startswith(metric) and labels.get("model_name", "").startswith(model)
                        and labels.get("model_version", "").startswith(version)):
                    total += s.value if s.name.endswith("_sum") else 0
                    count += s.value if s.name.endswith("_count") else 0
        return total / count if count else None

    def zero_when_empty(text, metric, model, version):
        mean = solution("metric_mean")(text, metric, model, version)
        return 0.0 if mean is None else mean

    def mean_of_buckets(text, metric, model, version):
        for family in text_string_to_metric_families(text):
            if family.name == metric:
                values = [s.value for s in family.samples if s.name.endswith("_bucket")
                          and s.labels.get("model_name") == model and s.labels.get("model_version") == version]
                return sum(values) / len(values) if values else None
        return None

    return {"ignores the version": ignores_the_version, "prefix match": prefix_match,
            "0 for no observations": zero_when_empty, "mean of the buckets": mean_of_buckets}


@pytest.mark.parametrize("mistake", list(metric_mistakes()))
def test_metric_mean_mistakes_fail_on_every_seed(mistake):
    assert_fails_on_every_seed("02.metric_mean", metric_mistakes()[mistake])


def test_hidden_pages_hold_the_metrics_the_lab_logs():
    """The check asks for the histograms the lab's runtime registers, not for names of an older lab."""
    registered = set(re.findall(r'mlserver\.register\("(\w+)"', (RUNTIMES / "diagnosis_runtime.py").read_text()))
    assert registered == {"diagnosis_rows", "diagnosis_watched_rows"}
    asked, families = set(), set()

    def spy(text, metric, model, version):
        asked.add(metric)
        families.update(family.name for family in text_string_to_metric_families(text))
        return solution("metric_mean")(text, metric, model, version)

    assert check("02.metric_mean", spy, seed=0).passed
    assert asked == registered
    assert registered <= families


REQUIREMENTS_MISTAKES = {
    "pinned with ==": lambda names: "\n".join(f"{n}>=0.1" for n in names),
    "not installed": lambda names: "".join(f"{n}=={version(n)}\n" for n in names if n in PACKAGES),
    "unpinned": lambda names: "\n".join(names),
    "one line": lambda names: " ".join(f"{n}=={version(n)}" for n in names),
}


@pytest.mark.parametrize("mistake", REQUIREMENTS_MISTAKES)
def test_requirements_mistakes_fail_on_every_seed(mistake):
    assert_fails_on_every_seed("02.requirements", REQUIREMENTS_MISTAKES[mistake])


def test_requirements_messages():
    loose = check("02.requirements", REQUIREMENTS_MISTAKES["pinned with =="])
    assert loose.status == "failed" and "pinned with ==" in loose.message


@pytest.mark.parametrize("name", ["02.settings", "02.runtime", "02.metric_mean", "02.requirements"])
def test_placeholder_and_odd_answers(name):
    assert check(name, ...).status == "not_attempted"
    for odd in ODD_ANSWERS:
        feedback = check(name, odd)
        assert feedback.status in ("failed", "not_attempted"), (odd, feedback)


# -- the runtime check serves the folder ----------------------------------------------------------------


@pytest.fixture(scope="module")
def frame_model(dataset):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(dataset.X, dataset.y)


def model_folder(path, model, class_names, strict_source=None, implementation="strict_runtime.StrictDiagnosisModel"):
    from test_runtime_fuzz import strict_model_folder

    folder = strict_model_folder(path, model, class_names, max_rows=40)
    settings = json.loads((folder / "model-settings.json").read_text())
    settings["implementation"] = implementation
    (folder / "model-settings.json").write_text(json.dumps(settings))
    if strict_source is not None:
        (folder / "strict_runtime.py").write_text(strict_source)
    return folder


def test_runtime_solution_passes_with_a_relative_path(tmp_path, monkeypatch, frame_model, dataset):
    model_folder(tmp_path / "work" / "diagnosis", frame_model, dataset.target_names)
    monkeypatch.chdir(tmp_path)
    feedback = check("02.runtime", "work/diagnosis")
    assert feedback.status == "passed", feedback.message
    assert "400" in feedback.message


def test_runtime_without_validation_fails(tmp_path, frame_model, dataset):
    folder = model_folder(tmp_path / "m", frame_model, dataset.target_names,
                          implementation="diagnosis_runtime.DiagnosisModel")
    feedback = check("02.runtime", str(folder))
    assert feedback.status == "failed"
    assert re.search(r"got 500|INTERNAL|was answered", feedback.message), feedback.message


def test_runtime_with_swapped_labels_fails(tmp_path, frame_model, dataset):
    folder = model_folder(tmp_path / "m", frame_model, dataset.target_names)
    source = (folder / "diagnosis_runtime.py").read_text()
    (folder / "diagnosis_runtime.py").write_text(source.replace("probabilities.argmax(", "probabilities.argmin("))
    feedback = check("02.runtime", str(folder))
    assert feedback.status == "failed" and "'label'" in feedback.message, feedback.message


def test_a_model_trained_on_other_columns_fails(tmp_path, frame_model, dataset):
    """The check reads the model's columns in its server (it never unpickles a student's file itself)."""
    from sklearn.base import clone

    renamed = dataset.X.rename(columns=lambda c: c.upper())
    model = clone(frame_model).fit(renamed, dataset.y)
    feedback = check("02.runtime", str(model_folder(tmp_path / "m", model, dataset.target_names)))
    assert feedback.status == "failed" and "breast cancer columns" in feedback.message, feedback.message


# Serving costs seconds per call, so runtimes that miss one kind of bad request run on 2 seeds, not 20: every
# call sends all 20 kinds of bad request (only their details are random), so a runtime that misses one kind
# fails on every seed, and the seed decides no grade.
SERVER_SEEDS = range(2)
FORGETS = {
    "NaN or infinite": ("bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1))", "bad_rows = np.array([])"),
    "more than max_rows": ("if not 1 <= len(frame) <= self._max_rows:", "if len(frame) < 1:"),
    "INT8": ("if tensor.datatype not in FLOATS:", "if tensor.datatype == 'BYTES':"),
    # answered with the rows numpy's reshape guesses (the count check alone refuses them too: a product with one
    # negative size is no count, and numpy refuses two)
    "negative size": [("if any(size < 0 for size in shape):", "if False:"),
                      ("if math.prod(nested) != math.prod(shape):", "if False:")],
    # answered with values shuffled across features (the 2-D kind) or reshaped silently (the 3-D kind)
    "nested": ("if len(nested) > 1 and nested != shape:", "if False:"),
    # the pandas codec never compares a column's shape with its data: answered
    "declares more rows": ("if math.prod(nested) != math.prod(shape):", "if False:"),
    # reasons that do not say which column
    "the column": [("{missing[:3]}", "{missing[:0]}"), ("{extra[:3]}", "{extra[:0]}")],
    # the columns of the NaN, not its rows
    "the row": ("np.isfinite(values).all(axis=1)", "np.isfinite(values).all(axis=0)"),
}


@pytest.mark.parametrize("kind", FORGETS)
def test_a_runtime_that_misses_one_kind_fails_on_every_seed_with_partial_credit(tmp_path, frame_model, dataset,
                                                                                 kind):
    source = (RUNTIMES / "strict_runtime.py").read_text()
    for old, new in FORGETS[kind] if isinstance(FORGETS[kind], list) else [FORGETS[kind]]:
        assert old in source
        source = source.replace(old, new)
    folder = model_folder(tmp_path / "m", frame_model, dataset.target_names,
                          strict_source=source)
    for seed in SERVER_SEEDS:
        feedback = check("02.runtime", str(folder), seed=seed)
        assert feedback.status == "failed" and kind in feedback.message, feedback.message
        assert 0 < feedback.points < feedback.max_points, "partial credit for the kinds it refuses"


def test_every_kind_of_bad_request_is_sent_on_every_call(dataset):
    import re

    import numpy as np

    from labkit.checks.lab02 import _bad_requests

    def kinds(seed):
        drawn = _bad_requests(dataset.X.iloc[:3], 40, np.random.default_rng(seed))
        return sorted((re.sub(r"'\w[^']*'|\d+", "N", what), protocol) for what, protocol, *_ in drawn)

    assert len(kinds(0)) == len(set(kinds(0))) == 20
    assert all(kinds(seed) == kinds(0) for seed in range(1, 20))


def test_runtime_placeholder_is_not_attempted_and_missing_folder_fails(tmp_path, frame_model, dataset):
    source = (RUNTIMES / "strict_runtime.py").read_text()
    start, end = source.index("        ### BEGIN SOLUTION"), source.index("### END SOLUTION") + len("### END SOLUTION")
    placeholder = source[:start] + "        " + PLACEHOLDER + source[end:]
    folder = model_folder(tmp_path / "m", frame_model, dataset.target_names, strict_source=placeholder)
    assert check("02.runtime", str(folder)).status == "not_attempted"
    shutil.rmtree(folder)
    feedback = check("02.runtime", str(folder))
    assert feedback.status == "failed" and "model-settings.json" in feedback.message
