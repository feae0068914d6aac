"""Lab 02's checks: the solutions pass, typical mistakes fail with the right message, odd answers never raise."""

import json
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import nbformat
import pytest
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


def test_settings_solution_passes():
    feedback = check("02.settings", solution("make_settings"))
    assert feedback.status == "passed", feedback.message


def test_settings_mistakes_fail():
    make = solution("make_settings")

    def no_content_type(*args):
        settings = make(*args)
        del settings["outputs"][0]["parameters"]
        return settings

    def fixed_classes(name, version, class_names, n_features):
        return make(name, version, class_names[:2], n_features)

    def version_in_name(name, version, class_names, n_features):
        settings = make(name, version, class_names, n_features)
        del settings["parameters"]["version"]
        return settings

    for wrong, words in [(no_content_type, "content type"), (fixed_classes, "class names"),
                         (version_in_name, "parameters.version")]:
        feedback = check("02.settings", wrong)
        assert feedback.status == "failed" and words in feedback.message, feedback.message


def test_metric_mean_solution_passes_and_mistakes_fail():
    assert check("02.metric_mean", solution("metric_mean")).status == "passed"

    def first_match(text, metric, model, version):  # ignores the version
        for family in text_string_to_metric_families(text):
            if family.name == metric:
                samples = {s.name: s.value for s in family.samples if s.labels.get("model_name") == model}
                return samples[metric + "_sum"] / samples[metric + "_count"] if samples else None
        return None

    feedback = check("02.metric_mean", first_match)
    assert feedback.status == "failed"


def test_requirements_solution_passes_and_mistakes_fail():
    assert check("02.requirements", solution("make_requirements")).status == "passed"
    loose = check("02.requirements", lambda names: "\n".join(f"{n}>=0.1" for n in names))
    assert loose.status == "failed" and "pinned with ==" in loose.message
    quiet = check("02.requirements", lambda names: "".join(f"{n}=={version(n)}\n" for n in names if n in PACKAGES))
    assert quiet.status == "failed"  # drops names it does not know instead of saying so


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


def test_runtime_that_forgets_nan_fails(tmp_path, frame_model, dataset):
    source = (RUNTIMES / "strict_runtime.py").read_text()
    source = source.replace("bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1))", "bad_rows = np.array([])")
    folder = model_folder(tmp_path / "m", frame_model, dataset.target_names, strict_source=source)
    for seed in range(10):  # the NaN case is drawn at random: find a seed that sends it
        feedback = check("02.runtime", str(folder), seed=seed)
        if feedback.status == "failed":
            assert "NaN or infinite" in feedback.message, feedback.message
            break
    else:
        pytest.fail("no seed sent a NaN")


def test_runtime_placeholder_is_not_attempted_and_missing_folder_fails(tmp_path, frame_model, dataset):
    source = (RUNTIMES / "strict_runtime.py").read_text()
    start, end = source.index("        ### BEGIN SOLUTION"), source.index("### END SOLUTION") + len("### END SOLUTION")
    placeholder = source[:start] + "        " + PLACEHOLDER + source[end:]
    folder = model_folder(tmp_path / "m", frame_model, dataset.target_names, strict_source=placeholder)
    assert check("02.runtime", str(folder)).status == "not_attempted"
    shutil.rmtree(folder)
    feedback = check("02.runtime", str(folder))
    assert feedback.status == "failed" and "model-settings.json" in feedback.message
