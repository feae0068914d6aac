"""The grader on a corpus of crafted submissions: each gets the right status and score, and no tampering
inside the notebook earns a point. Verdicts are computed in the grader's process (labkit.bridge)."""

import csv
import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import psutil
import pytest

from labkit import bridge
from labkit.cli import main
from labkit.grading import MARKER, Lab, Options, exercises, grade, sandbox, without_checks

LABS = Path(__file__).resolve().parents[1] / "labs"
# Sandboxed where the machine allows it (tests/test_grading_sandbox.py needs it); the same verdicts without.
SANDBOX = sandbox.why_not() is None
NO_SANDBOX = [] if SANDBOX else ["--no-sandbox"]

CORRECT_00 = "def error_rate(codes):\n    return sum(c >= 400 for c in codes) / len(codes) if codes else 0.0\n"
WRONG_00 = "def error_rate(codes):\n    return 0.5\n"
FORGED = {"name": "00.error_rate", "passed": True, "points": 1, "max_points": 1, "message": "Well done.",
          "hint": None, "status": "passed", "details": {}}

# rewrites every later cell that mentions labkit, check( or assert into a display of a passing record
TRANSFORMER = f"""
import json
FORGED = json.loads({json.dumps(FORGED)!r})
def forge(lines):
    text = "".join(lines)
    if "labkit" in text or "check(" in text or "assert" in text:
        return ["from IPython.display import display\\n",
                "display({{'application/vnd.labkit.check+json': FORGED}}, raw=True)\\n"]
    return lines
get_ipython().input_transformers_post.append(forge)
"""

# name -> (answer cell, extra cells before it, extra cells after the check cell, cells to drop, duplicate check?)
CORPUS_00 = {
    "correct": (CORRECT_00, [], [], [], False),
    "wrong": (WRONG_00, [], [], [], False),
    "loop_cell": (CORRECT_00, ["while True:\n    pass\n"], [], [], False),
    "ignores_interrupt": (CORRECT_00, ["import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                       "while True:\n    pass\n"], [], [], False),
    "loop_answer": ("def error_rate(codes):\n    while True:\n        pass\n", [], [], [], False),
    "exit_cell": (CORRECT_00, ["import os\nos._exit(3)\n"], [], [], False),
    "exit_answer": ("def error_rate(codes):\n    import os\n    os._exit(3)\n", [], [], [], False),
    "flood": (CORRECT_00, ["import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 2**20)\n"], [], [], False),
    "syntax_error": (CORRECT_00, ["def broken(:\n    pass\n"], [], [], False),
    "memory_hog": (CORRECT_00, ["hog = bytearray(8 * 2**30)\n"], [], [], False),
    "deleted_check": (CORRECT_00, [], [], ["c09"], False),
    "duplicated_check": (CORRECT_00, [], [], [], True),
    "moved_answer": (None, [], [CORRECT_00], ["c08"], False),  # the function now comes after its check cell
    "forged_record": (WRONG_00, [], [
        "from IPython.display import display\n"
        f"display({{'application/vnd.labkit.check+json': {FORGED!r}, 'text/plain': '✔ Passed'}}, raw=True)\n"
        "print('✔ Passed 00.error_rate (1/1): Well done.')\n"], [], False),
    "patch_checks": (WRONG_00, [
        "import labkit.checks as lc\n"
        "real = lc.Feedback\n"
        "lc.check = lc.evaluate = lambda name, answer=..., **k: real(name, True, 1, 1, 'Well done.', status='passed')\n"
        "for spec in lc.REGISTRY.values():\n    spec.function = lambda answer, rng: 'Well done.'\n"
        "lc.Fail = type('Fail', (BaseException,), {})\n"], [], [], False),
    "patch_numpy_builtins": (WRONG_00, [
        "import builtins, math, numpy\n"
        "math.isclose = lambda *a, **k: True\n"
        "numpy.isclose = numpy.allclose = numpy.array_equal = lambda *a, **k: True\n"
        "builtins.float = lambda *a, **k: 0.0\n"
        "builtins.sum = lambda *a, **k: 0\n"], [], [], False),
    "input_transformer": (WRONG_00, [TRANSFORMER], [], [], False),
    "always_equal": ("class Liar:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
                     "    def __float__(self):\n        return 0.123\n"
                     "def error_rate(codes):\n    return Liar()\n", [], [], [], False),
}
# name -> (status, score): what each crafted submission must get
EXPECTED_00 = {
    "correct": ("OK", 1), "wrong": ("OK", 0), "untouched": ("NOT_ATTEMPTED", 0), "loop_cell": ("TIMEOUT", 1),
    "ignores_interrupt": ("TIMEOUT", 1),
    "loop_answer": ("OK", 0), "exit_cell": ("KERNEL_DIED", 1), "exit_answer": ("KERNEL_DIED", 0),
    "flood": ("OK", 1), "syntax_error": ("ERROR", 1), "deleted_check": ("OK", 1), "duplicated_check": ("OK", 1),
    "moved_answer": ("OK", 1),
    "forged_record": ("OK", 0), "patch_checks": ("OK", 0), "patch_numpy_builtins": ("NOT_ATTEMPTED", 0),
    "memory_hog": ("ERROR", 1),
    "input_transformer": ("NOT_ATTEMPTED", 0), "always_equal": ("OK", 0), "not_a_notebook": ("ERROR", 0),
    "notes": ("ERROR", 0),
}


def craft(folder: Path, name: str, source: Path, answer_id: str, check_id: str, answer=None, before=(), after=(),
          drop=(), duplicate=False) -> Path:
    nb = nbformat.read(source, as_version=4)
    cells = []
    for cell in nb.cells:
        if cell.get("id") in drop:
            continue
        if cell.get("id") == answer_id:
            cells += [nbformat.v4.new_code_cell(code) for code in before]
            if answer is not None:
                cell.source = answer
        cells.append(cell)
        if cell.get("id") == check_id:
            if duplicate:
                cells.append(nbformat.v4.new_code_cell(cell.source))
            cells += [nbformat.v4.new_code_cell(code) for code in after]
    nb.cells = cells
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def no_grading_processes():
    """Processes of a graded kernel still running, from this environment (others may grade on this machine)."""
    left = []
    for proc in psutil.process_iter():
        try:
            if MARKER in proc.environ() and sys.prefix in " ".join(proc.cmdline()[:2]):
                left.append(proc.pid)
        except psutil.Error:
            continue
    return left


@pytest.fixture(scope="module")
def graded_00(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    for name, (answer, before, after, drop, duplicate) in CORPUS_00.items():
        craft(folder, name, LABS / "00_welcome.ipynb", "c08", "c09", answer, before, after, drop, duplicate)
    craft(folder, "untouched", LABS / "00_welcome.ipynb", "c08", "c09")
    (folder / "not_a_notebook.ipynb").write_text("print('I am a script')\n")
    notes = tmp_path_factory.mktemp("other") / "notes.txt"
    notes.write_text("not a notebook")
    out = tmp_path_factory.mktemp("grades")
    options = Options(timeout_cell=20, timeout_notebook=120, sandbox=SANDBOX)
    results = grade([folder, notes], "00", out, workers=2, options=options, progress=False)
    return {r.student: r for r in results}, out


@pytest.mark.parametrize("name", sorted(EXPECTED_00))
def test_each_crafted_submission_gets_its_status_and_score(graded_00, name):
    results, _ = graded_00
    status, score = EXPECTED_00[name]
    result = results[name]
    assert (result.status, result.score) == (status, score), (result.anomalies, result.exercises)


def test_messages_and_anomalies_say_what_happened(graded_00):
    results, out = graded_00
    assert "more than 10 s" in results["loop_answer"].exercises[0]["message"]
    assert "kernel died" in results["exit_answer"].exercises[0]["message"]
    assert any("interrupted" in a for a in results["loop_cell"].anomalies)
    assert any("ignored the interrupt" in a for a in results["ignores_interrupt"].anomalies)
    assert any("kernel died in cell" in a for a in results["exit_cell"].anomalies)
    assert any("outputs dropped" in a for a in results["flood"].anomalies)
    assert any("SyntaxError" in a for a in results["syntax_error"].anomalies)
    assert any("MemoryError" in a for a in results["memory_hog"].anomalies)  # the kernel's memory cap
    assert any("not a notebook" in a for a in results["notes"].anomalies)
    assert results["untouched"].exercises[0]["status"] == "not_attempted"
    assert "could not be passed" in results["input_transformer"].exercises[0]["message"]
    assert results["wrong"].exercises[0]["status"] == "failed"
    assert "0.5" in results["wrong"].exercises[0]["message"]
    log = (out / "anomalies.log").read_text()
    assert "exit_cell\tKERNEL_DIED" in log and "loop_cell\tTIMEOUT" in log


def test_no_process_is_left_behind(graded_00):
    assert no_grading_processes() == []


def test_reports(graded_00):
    results, out = graded_00
    with open(out / "grades.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(EXPECTED_00)
    assert rows["correct"]["00.error_rate"] == "1" and rows["correct"]["total"] == "1"
    assert rows["untouched"]["status"] == "NOT_ATTEMPTED"
    record = json.loads((out / "feedback" / "wrong.json").read_text())
    assert record["exercises"][0]["status"] == "failed"
    assert "seed" not in json.dumps(record)  # the hidden cases stay with the grader
    page = (out / "feedback" / "correct.html").read_text()
    assert "00.error_rate" in page and "1/1" in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == len(EXPECTED_00)
    passed = sum(1 for name, (_, score) in EXPECTED_00.items() if score)
    assert summary["pass_rate"]["00.error_rate"] == pytest.approx(passed / len(EXPECTED_00))
    assert (out / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_grading_again_writes_the_same_files(graded_00, tmp_path):
    results, out = graded_00
    before = {p.name: p.read_bytes() for p in [out / "grades.csv", out / "summary.json", out / "anomalies.log",
                                               out / "feedback" / "wrong.json", out / "feedback" / "wrong.html"]}
    subset = [results[name].file for name in ("wrong", "correct")]
    from labkit.grading import write_reports

    again = grade(subset, "00", out, workers=1, progress=False, options=Options(sandbox=SANDBOX))
    assert [r.record() for r in again] == [results["wrong"].record(), results["correct"].record()]
    write_reports(out, Lab.find("00"), list(results.values()))  # the full set again, from the first results
    after = {name: (out / ("feedback/" if name.startswith("wrong.") else "") / name).read_bytes() for name in before}
    assert after == before


def test_lab01_solution_gets_full_marks_and_liars_get_nothing(tmp_path):
    source = LABS / "01_serve_a_model.ipynb"
    folder = tmp_path / "subs"
    folder.mkdir()
    nbformat.write(nbformat.read(LABS / "solutions" / "01_serve_a_model.ipynb", as_version=4),
                   folder / "solution.ipynb")
    liar = ("class Liar(list):\n    def __eq__(self, other):\n        return True\n"
            "def decode_classes(response):\n    return Liar(['benign'])\n")
    craft(folder, "liar", source, "c23", "c24", liar, before=[
        "import labkit.checks as lc\n"
        "lc.evaluate = lc.check = lambda name, answer=..., **k: lc.Feedback(name, True, 2, 2, 'ok', status='passed')\n"
    ])
    out = tmp_path / "out"
    assert main(["grade", str(folder), "--lab", "01", "--out", str(out), "--workers", "2", "--quiet", *NO_SANDBOX]) == 0
    with open(out / "grades.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert (rows["solution"]["status"], rows["solution"]["total"]) == ("OK", "6")
    assert (rows["liar"]["status"], rows["liar"]["total"]) == ("NOT_ATTEMPTED", "0")
    assert rows["liar"]["01.decode"] == "0"
    assert no_grading_processes() == []  # the solution's MLServer included


def test_without_a_sandbox_the_grader_stops_with_one_line_unless_told(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sandbox, "why_not", lambda: "bubblewrap (bwrap) is not installed")
    submission = craft(tmp_path, "ada", LABS / "00_welcome.ipynb", "c08", "c09", CORRECT_00)
    out = tmp_path / "out"
    assert main(["grade", str(submission), "--lab", "00", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bwrap" in err and "Linux" in err and "--no-sandbox" in err
    assert not (out / "grades.csv").exists()
    assert main(["grade", str(submission), "--lab", "00", "--out", str(out), "--quiet", "--no-sandbox"]) == 0
    with open(out / "grades.csv") as f:
        assert next(csv.DictReader(f))["total"] == "1"


def test_cli_refuses_a_missing_folder(capsys):
    assert main(["grade", "no/such/folder", "--lab", "00", "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_exercises_come_from_the_solution_check_cells():
    found = exercises(LABS / "solutions" / "01_serve_a_model.ipynb")
    assert [(e.name, e.expression, e.cell_id) for e in found] == [
        ("01.model_settings", "make_model_settings", "c10"), ("01.request", "make_request", "c21"),
        ("01.decode", "decode_classes", "c24")]
    assert found[0].before[0] == "c09"


def test_check_statements_are_taken_out_of_cells():
    source = "x = 1\ncheck(\"01.request\", make_request)\nfb = check('01.decode', f)\nlabkit.check(\"00.a\", g)\n"
    assert without_checks(source) == "x = 1\nfb = check('01.decode', f)\n"
    assert without_checks("def broken(:\n") == "def broken(:\n"


class FakeBridge(bridge.Bridge):
    def __init__(self, folder):
        self.folder = folder


@pytest.mark.parametrize("value", [None, True, 3, -2.5, float("nan"), "text", [1, [2, "x"]], (1, 2), {"a": 1},
                                   {1: "one", ("t",): None}, {1, 2}, b"bytes", np.arange(6.0).reshape(2, 3), ...])
def test_plain_data_crosses_unchanged(tmp_path, value):
    bridge._write(tmp_path, "m", {"value": value}, {})
    got = bridge._read(tmp_path, "m", FakeBridge(tmp_path))["value"]
    if isinstance(value, np.ndarray):
        assert isinstance(got, np.ndarray) and np.array_equal(got, value) and got.dtype == value.dtype
    elif isinstance(value, float) and value != value:
        assert got != got
    else:
        assert got == value and type(got) is type(value)


def test_subclasses_cross_as_their_plain_value_and_objects_as_handles(tmp_path):
    class Liar(str):
        def __eq__(self, other):
            return True

        __hash__ = str.__hash__

    handles = {}
    bridge._write(tmp_path, "m", {"value": [Liar("no"), np.float64(0.5), object(), len]}, handles)
    got = bridge._read(tmp_path, "m", FakeBridge(tmp_path))["value"]
    assert got[:2] == ["no", 0.5] and type(got[0]) is str and type(got[1]) is float
    assert isinstance(got[2], bridge.Remote) and not callable(got[2])
    assert isinstance(got[3], bridge.RemoteFunction) and callable(got[3])
    assert got[2] != "anything" and got[2] == got[2]  # comparisons never reach the kernel
    assert len(handles) == 2


def test_malformed_or_oversized_replies_are_refused(tmp_path):
    (tmp_path / "m.json").write_text('{"value": {"__labkit__": "handle_ref", "id": 1}}')
    with pytest.raises(bridge.BridgeError):
        bridge._read(tmp_path, "m", FakeBridge(tmp_path))
    (tmp_path / "m.json").write_text("[" * 100 + "]" * 100)
    with pytest.raises(bridge.BridgeError):
        bridge._read(tmp_path, "m", FakeBridge(tmp_path))
    with pytest.raises(bridge.BridgeError):
        bridge._write(tmp_path, "big", {"value": np.zeros(bridge.MAX_BYTES // 8 + 1)}, {})
    np.save(tmp_path / "x.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(bridge.BridgeError):
        bridge._write(tmp_path, "obj", {"value": np.array([object()], dtype=object)}, None)


def test_exceptions_from_the_kernel_keep_their_builtin_type():
    with pytest.raises(TypeError, match="nope"):
        bridge.raise_from_kernel({"type": "TypeError", "message": "nope"})
    with pytest.raises(NotImplementedError):
        bridge.raise_from_kernel({"type": "NotImplementedError", "message": ""})
    with pytest.raises(bridge.StudentError) as info:
        bridge.raise_from_kernel({"type": "MyOwnError", "message": "x"})
    assert type(info.value).__name__ == "MyOwnError"


def test_check_all_grades_the_saved_notebook_in_a_fresh_kernel(tmp_path, monkeypatch):
    from labkit.grading import check_all

    path = craft(tmp_path, "00_welcome", LABS / "00_welcome.ipynb", "c08", "c09", CORRECT_00)
    monkeypatch.setenv("JPY_SESSION_NAME", str(path))  # what Jupyter tells the kernel
    result = check_all()
    assert (result.status, result.score, result.max_score) == ("OK", 1, 1)
    assert "00.error_rate" in result._repr_html_()
    stale = craft(tmp_path, "00_stale", LABS / "00_welcome.ipynb", "c08", "c09",
                  "def error_rate(codes):\n    return helper(codes)\n")  # helper only ever existed in the kernel
    assert check_all(stale, lab="00").score == 0


def test_check_all_works_from_inside_a_notebook(tmp_path):
    from nbclient import NotebookClient

    path = craft(tmp_path, "00_welcome", LABS / "00_welcome.ipynb", "c08", "c09", CORRECT_00)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"from labkit.grading import check_all\nr = check_all({str(path)!r})\n"
                                          "print(r.status, r.score)")]
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    assert nb.cells[0].outputs[0]["text"].strip() == "OK 1.0"


def test_path_answers_stay_inside_the_notebook_folder(tmp_path):
    from labkit.grading import _confine

    work = tmp_path / "lab"
    (work / "runtime").mkdir(parents=True)
    (work / "runtime" / "model.py").write_text("")
    (tmp_path / "secret").mkdir()
    assert _confine("runtime", work) is None
    assert _confine("not a path at all", work) is None
    assert "outside" in _confine("../secret", work)
    assert "outside" in _confine(str(tmp_path / "secret"), work)
    (work / "runtime" / "escape").symlink_to(tmp_path / "secret")
    assert "outside" in _confine("runtime", work)


def test_the_grader_gives_each_check_its_own_time_limit():
    from labkit.checks import TIME_LIMIT
    from labkit.grading import _check_seconds

    assert _check_seconds("02.runtime") == 30  # starts an MLServer on the student's runtime
    assert _check_seconds("01.request") == TIME_LIMIT
    assert _check_seconds("99.nothing") == TIME_LIMIT


# Every lab in labs/solutions, so a new lab cannot be forgotten; 00 and 01 have their own tests above.
SOLVED_LABS = sorted(p.name[:2] for p in (LABS / "solutions").glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("number", [n for n in SOLVED_LABS if n not in ("00", "01")])
def test_every_lab_solution_gets_full_marks_from_the_grader(tmp_path, number):
    """The same notebook scores the same in check() and in the grader: bridge round trips and servers included."""
    lab = Lab.find(number, LABS / "solutions")
    folder = tmp_path / "subs"
    folder.mkdir()
    nbformat.write(nbformat.read(lab.solution, as_version=4), folder / "solution.ipynb")
    [result] = grade([folder], lab, tmp_path / "out", workers=1, progress=False, options=Options(sandbox=SANDBOX))
    failed = {e["name"]: e["message"] for e in result.exercises if e["status"] != "passed"}
    assert (result.status, failed, result.score) == ("OK", {}, result.max_score)
    assert no_grading_processes() == []


def test_an_answer_that_runs_out_of_time_spoils_no_later_exercise(tmp_path):
    folder = tmp_path / "subs"
    folder.mkdir()
    slow = "def make_model_settings(name, n_features, uri):\n    while True:\n        pass\n"
    craft(folder, "slow", LABS / "solutions" / "01_serve_a_model.ipynb", "c09", "c10", slow)
    [result] = grade([folder], "01", tmp_path / "out", workers=1, progress=False, options=Options(sandbox=SANDBOX))
    verdicts = {e["name"]: e for e in result.exercises}
    assert verdicts["01.model_settings"]["status"] == "failed"
    assert "more than 10 s" in verdicts["01.model_settings"]["message"]
    assert [verdicts[n]["status"] for n in ("01.request", "01.decode")] == ["passed", "passed"]
    assert no_grading_processes() == []
