"""Student notebooks: in sync with the solutions, and runnable untouched."""

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from labkit.checks import MIME_TYPE
from labkit.grading import assign

ROOT = Path(__file__).resolve().parent.parent
STUDENT_NOTEBOOKS = sorted((ROOT / "labs").glob("[0-9][0-9]_*.ipynb"))


def test_student_notebooks_are_generated_from_solutions():
    result = assign(ROOT / "labs" / "solutions", ROOT / "labs", check=True)
    assert result.out_of_sync == [], "run `labkit assign` and commit the student notebooks"
    assert result.stale == []
    assert len(result.unchanged) == len(STUDENT_NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", STUDENT_NOTEBOOKS, ids=lambda p: p.name)
def test_untouched_student_notebook_runs_and_reports_not_attempted(path, tmp_path):
    shutil.copy(path, tmp_path / path.name)
    nb = nbformat.read(tmp_path / path.name, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    records = [o.data[MIME_TYPE] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if MIME_TYPE in o.get("data", {})]
    calls = sum(c.source.count("check(\"") for c in nb.cells if c.cell_type == "code")
    assert len(records) == calls >= 1
    assert {r["status"] for r in records} == {"not_attempted"}
    assert all(r["points"] == 0 for r in records)
