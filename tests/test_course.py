"""Finding the course (data, runtimes, solutions) however labkit was installed."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from labkit import course

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_course(tmp_path):
    """A folder that holds the course's marker, with a nested working folder."""
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "SHA256SUMS").write_text("")
    (tmp_path / "labs" / "deep").mkdir(parents=True)
    return tmp_path


def test_found_from_the_source_tree_when_nothing_else_says(tmp_path, monkeypatch):
    monkeypatch.delenv(course.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert course.root() == ROOT
    assert course.runtimes() == ROOT / "labs" / "runtimes"
    assert course.solutions() == ROOT / "labs" / "solutions"


def test_walks_up_from_the_working_directory(fake_course, monkeypatch):
    monkeypatch.delenv(course.ENV, raising=False)
    monkeypatch.chdir(fake_course / "labs" / "deep")
    assert course.root() == fake_course
    assert course.datasets() == fake_course / "datasets"


def test_the_setting_wins(fake_course, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv(course.ENV, str(fake_course))
    assert course.root() == fake_course


def test_a_setting_without_the_course_is_refused_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv(course.ENV, str(tmp_path))
    with pytest.raises(course.CourseNotFound, match=r"LABKIT_COURSE=.*SHA256SUMS is missing"):
        course.root()


def test_nothing_found_names_what_was_searched(tmp_path, monkeypatch):
    monkeypatch.delenv(course.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(course, "__file__", str(tmp_path / "site-packages" / "labkit" / "course.py"))
    course._find.cache_clear()
    try:
        with pytest.raises(course.CourseNotFound) as error:
            course.root()
    finally:
        course._find.cache_clear()
    message = str(error.value)
    assert str(tmp_path) in message and "site-packages" in message and "LABKIT_COURSE" in message


def test_no_labkit_code_derives_a_course_path_from_its_own_file():
    offenders = [f"{p.relative_to(ROOT)}: {line.strip()}" for p in (ROOT / "labkit").rglob("*.py")
                 if p.name != "course.py" for line in p.read_text().splitlines()
                 if "__file__" in line and any(part in line for part in ('"labs"', '"datasets"', "parents["))]
    assert offenders == []
    for notebook in (ROOT / "labs").rglob("*.ipynb"):
        assert "labkit.__file__" not in notebook.read_text(), notebook


# -- labkit as a wheel, the way Binder, a JupyterHub image or an instructor installs it --------------------------
@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    """labkit built as a wheel and installed (without its dependencies) into a folder of its own."""
    build = tmp_path_factory.mktemp("wheel")
    source = build / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv*", ".git", "build", "*.egg-info",
                                                                "__pycache__", "node_modules", "results"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(build / "dist"), str(source)], check=True, timeout=300)
    wheel = next((build / "dist").glob("labkit-*.whl"))
    assert not any(n.startswith(("datasets/", "labs/")) for n in zipfile.ZipFile(wheel).namelist())
    site = build / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, timeout=300)
    return site


def _wheel_env(site):
    env = dict(os.environ, PYTHONPATH=str(site), LABKIT_QUIET="1")
    env.pop(course.ENV, None)
    return env


def _run_notebook_from_labs(path, site, tmp_path):
    """Run a notebook as JupyterLab does from labs/, in a kernel that imports labkit from ``site``."""
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import labkit, json; print(json.dumps(labkit.__file__))"))
    copy = tmp_path / path.name
    nbformat.write(nb, copy)
    runner = (
        "import sys, nbformat\n"
        "from nbclient import NotebookClient\n"
        "nb = nbformat.read(sys.argv[1], as_version=4)\n"
        "NotebookClient(nb, timeout=180, kernel_name='python3', allow_errors=True,\n"
        "               resources={'metadata': {'path': sys.argv[2]}}).execute()\n"
        "nbformat.write(nb, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", runner, str(copy), str(ROOT / "labs")], env=_wheel_env(site),
                   check=True, timeout=600)
    ran = nbformat.read(copy, as_version=4)
    errors = [f"cell {i}: {o.ename}: {o.evalue}" for i, c in enumerate(ran.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert errors == []
    imported_from = json.loads(ran.cells[-1].outputs[0].text)
    assert imported_from.startswith(str(site)), imported_from


@pytest.mark.parametrize("name", ["01_serve_a_model.ipynb", "07_detect_outliers.ipynb"])
def test_solution_runs_from_labs_with_labkit_from_a_wheel(name, wheel_site, tmp_path):
    _run_notebook_from_labs(ROOT / "labs" / "solutions" / name, wheel_site, tmp_path)


def test_lab03_check_serves_its_runtime_with_labkit_from_a_wheel(wheel_site):
    script = (
        "import labkit, json\n"
        "from labkit.checks import evaluate\n"
        "feedback = evaluate('03.batching_slo', {'max_batch_size': 16, 'max_batch_time': 0.01}, seed=1)\n"
        "print(json.dumps([labkit.__file__, feedback.passed, feedback.message]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=_wheel_env(wheel_site), cwd=ROOT / "labs",
                         capture_output=True, text=True, timeout=180, check=True).stdout
    imported_from, passed, message = json.loads(out.splitlines()[-1])
    assert imported_from.startswith(str(wheel_site))
    assert passed, message
