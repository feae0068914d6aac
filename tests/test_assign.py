import copy
import textwrap

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output, new_raw_cell

from labkit.checks import REGISTRY, Fail, register
from labkit.grading import (
    BEGIN,
    END,
    PLACEHOLDER_COMMENT,
    AssignError,
    assign,
    strip_solutions,
    student_notebook,
)

RAISE = 'raise NotImplementedError("Replace this line with your code")'


def block(code: str, indent: str = "") -> str:
    """``code`` between solution markers, all at ``indent``."""
    body = textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", indent)
    return f"{indent}{BEGIN}\n{body}{indent}{END}\n"


def placeholder_names(student_source: str) -> list[str]:
    """The names of the ``name = ...`` lines of a stripped top-level block."""
    return [line[: -len(" = ...")] for line in student_source.splitlines() if line.endswith(" = ...")]


def run_cells(nb) -> dict:
    """Execute a notebook's code cells in order in one namespace, like a kernel would."""
    namespace = {"__name__": "__main__"}
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            exec(compile(cell.source, f"<cell {index}>", "exec"), namespace)
    return namespace


# -- strip_solutions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head, indent",
    [
        ("def answer(x):\n", "    "),
        ("def answer(x):\n", "\t"),
        ("class A:\n    def answer(self, x):\n", "        "),
    ],
    ids=["function", "tab", "method"],
)
def test_indented_block_raises_not_implemented_at_its_indent(head, indent):
    source = head + f'{indent}"""Docstring stays."""\n' + block("y = x + 1\nreturn y", indent) + "after = 1\n"
    student = strip_solutions(source)
    assert student == (
        head
        + f'{indent}"""Docstring stays."""\n'
        + f"{indent}{PLACEHOLDER_COMMENT}\n"
        + f"{indent}{RAISE}\n"
        + "after = 1\n"
    )
    namespace = {}
    exec(student, namespace)
    function = namespace["A"]().answer if "A" in namespace else namespace["answer"]
    with pytest.raises(NotImplementedError):
        function(1)
    assert namespace["after"] == 1


@pytest.mark.parametrize(
    "code, names",
    [
        ("x = 1", ["x"]),
        ("a, (b, c) = 1, (2, 3)", ["a", "b", "c"]),
        ("[p, q] = [1, 2]", ["p", "q"]),
        ("a = b = 0", ["a", "b"]),
        ("threshold: float = 0.5", ["threshold"]),
        ("x = 1\nx += 1\ny = x * 2", ["x", "y"]),
        ("def detector(x):\n    return x > 0", ["detector"]),
        ("async def fetch():\n    return 1", ["fetch"]),
        ("class Detector:\n    def predict(self, x):\n        inner = x\n        return inner", ["Detector"]),
        ("model = object()\nmodel.fitted = True\nscores = {}\nscores['a'] = 1", ["model", "scores"]),
    ],
    ids=["name", "tuple", "list", "chained", "annotated", "augmented", "function", "async-function",
         "class", "attribute-and-item"],
)
def test_top_level_block_becomes_placeholders_for_its_names(code, names):
    student = strip_solutions("import math\n" + block(code) + "print(math.pi)\n")
    assert student.startswith("import math\n")
    assert student.endswith("print(math.pi)\n")
    assert placeholder_names(student) == names
    assert PLACEHOLDER_COMMENT in student
    namespace = {}
    exec(student.replace("print(math.pi)\n", ""), namespace)
    assert all(namespace[name] is ... for name in names)


@pytest.mark.parametrize(
    "code, names",
    [
        ("first, *rest = [1, 2, 3]", ["first", "rest"]),
        ("import contextlib\nwith contextlib.suppress(ValueError):\n    ratio = 1 / 2", ["ratio"]),
        ("if 1 > 0:\n    label = 'big'\nelse:\n    label = 'small'", ["label"]),
        ("try:\n    value = int('x')\nexcept ValueError:\n    value = 0", ["value"]),
        ("total = 0\nfor i in range(3):\n    total += i\n    last = i", ["total", "last"]),
    ],
    ids=["starred", "with", "if-else", "try", "for"],
)
def test_names_bound_in_compound_statements_get_placeholders(code, names):
    # Later cells use these names: without a placeholder the student notebook stops with a NameError.
    student = strip_solutions(block(code))
    missing = [name for name in names if name not in placeholder_names(student)]
    assert missing == [], f"no placeholder for {missing} in:\n{student}"


def test_block_without_assignment_leaves_a_comment_only():
    student = strip_solutions("x = 1\n" + block("print(x)\nx.bit_length()") + "y = 2\n")
    assert student == f"x = 1\n{PLACEHOLDER_COMMENT}\ny = 2\n"
    assert "print" not in student


def test_solution_code_is_gone():
    source = block("secret_answer = 6 * 7") + "def f():\n" + block("return 'also secret'", "    ")
    student = strip_solutions(source)
    assert "6 * 7" not in student and "also secret" not in student
    assert BEGIN not in student and END not in student


def test_code_outside_the_markers_is_kept_byte_for_byte():
    before = "# -*- weird -*-\r\nx\t=  1   \n\n\n  # indented comment\n"
    after = "\n\ny = [\n    1,  # trailing\n]\r\nz = 'no final newline'"
    student = strip_solutions(before + block("answer = 42") + after)
    assert student.startswith(before)
    assert student.endswith(after)
    assert student == before + strip_solutions(block("answer = 42")) + after


def test_final_newline_follows_the_source():
    with_newline = BEGIN + "\nanswer = 42\n" + END + "\n"
    assert strip_solutions(with_newline).endswith("answer = ...\n")
    assert strip_solutions(with_newline.rstrip("\n")).endswith("answer = ...")


def text_without_markers():
    return st.text().filter(lambda s: all(line.strip() not in (BEGIN, END) for line in s.splitlines()))


@given(source=text_without_markers())
def test_cells_without_markers_are_unchanged(source):
    assert strip_solutions(source) == source


@given(before=text_without_markers(), after=text_without_markers())
def test_text_around_a_block_is_unchanged(before, after):
    before = before + "\n"
    student = strip_solutions(before + block("answer = 42") + after)
    assert student == before + f"{PLACEHOLDER_COMMENT}: replace each ... with your answer\nanswer = ...\n" + after


@pytest.mark.parametrize(
    "source, words",
    [
        (f"x = 1\n{END}\n", "without"),
        (f"{END}\n{BEGIN}\nx = 1\n{END}\n", "without"),
        (f"{BEGIN}\nx = 1\n{BEGIN}\ny = 2\n{END}\n{END}\n", "nested"),
        (f"{BEGIN}\nx = 1\n", "without"),
        (f"def f():\n    {BEGIN}\n    return 1\n", "without"),
        (f"{BEGIN}\nx = = 1\n{END}\n", "does not parse"),
        (f"{BEGIN}\n  x = 1\n y = 2\n{END}\n", "does not parse"),
    ],
    ids=["end-without-begin", "end-before-begin", "nested", "unterminated", "unterminated-indented",
         "syntax-error", "bad-indentation"],
)
def test_malformed_markers_are_refused(source, words):
    with pytest.raises(AssignError, match=words):
        strip_solutions(source)


# -- student_notebook -------------------------------------------------------------------------------


@pytest.fixture
def lab_checks():
    """Checks that the small lab notebooks below call."""

    @register("99.zscore", points=1)
    def zscore_check(answer, rng):
        values = rng.normal(size=20)
        result = answer(values)
        if abs(result.mean()) > 1e-9 or abs(result.std() - 1) > 1e-9:
            raise Fail("mean 0 and standard deviation 1, please")

    @register("99.threshold", points=1)
    def threshold_check(answer, rng):
        if not isinstance(answer, float):
            raise Fail("a float, please")

    yield
    REGISTRY.pop("99.zscore", None)
    REGISTRY.pop("99.threshold", None)


def solution_notebook():
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        new_markdown_cell(f"# Lab 99\n\nSolutions go between `{BEGIN}` and `{END}`:\n\n{BEGIN}\nkeep me\n{END}"),
        new_code_cell("import numpy as np\nfrom labkit.checks import check"),
        new_code_cell(
            "def zscore(values):\n"
            '    """Standardise ``values``."""\n'
            + block("values = np.asarray(values, dtype=float)\nreturn (values - values.mean()) / values.std()",
                    "    ")
        ),
        new_code_cell('zscore_feedback = check("99.zscore", zscore)\nzscore_feedback'),
        new_code_cell("# choose a threshold\n" + block("threshold: float = 3.0\nlow, high = -threshold, threshold")),
        new_code_cell('threshold_feedback = check("99.threshold", threshold)\nwindow = (low, high)'),
        new_code_cell(block("print('a block that assigns nothing')")),
        new_raw_cell(f"{BEGIN}\nraw stays\n{END}"),
    ]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.execution_count = 7
            cell.outputs = [new_output("stream", name="stdout", text="old output\n")]
            cell.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00Z"}
            cell.metadata["tags"] = ["keep-me"]
    return nb


def test_student_notebook_clears_outputs_and_keeps_the_rest():
    solution = solution_notebook()
    pristine = copy.deepcopy(solution)
    student = student_notebook(solution)
    assert solution == pristine, "the solution notebook was modified"
    nbformat.validate(student)

    assert [c.id for c in student.cells] == [c.id for c in solution.cells]
    assert [c.cell_type for c in student.cells] == [c.cell_type for c in solution.cells]
    for mine, theirs in zip(student.cells, solution.cells, strict=True):
        if mine.cell_type == "code":
            assert mine.outputs == [] and mine.execution_count is None
            assert "execution" not in mine.metadata
            assert mine.metadata["tags"] == ["keep-me"]
            assert mine.source == strip_solutions(theirs.source)
        else:
            assert mine == theirs, "markdown and raw cells are untouched"
    assert student.metadata["kernelspec"] == solution.metadata["kernelspec"]
    assert student.metadata["labkit"]["generated_from"] == "solutions"


def test_student_notebook_runs_when_the_solution_does(lab_checks):
    solution = solution_notebook()
    done = run_cells(solution)
    assert done["zscore_feedback"].status == "passed"
    assert done["threshold_feedback"].status == "passed"

    todo = run_cells(student_notebook(solution))
    assert todo["zscore_feedback"].status == "not_attempted"
    assert todo["threshold_feedback"].status == "not_attempted"
    assert todo["window"] == (..., ...)


def test_student_notebook_with_compound_blocks_runs_when_the_solution_does():
    solution = new_notebook()
    solution.cells = [
        new_code_cell("import contextlib"),
        new_code_cell(block("with contextlib.suppress(ZeroDivisionError):\n    ratio = 1 / 2")),
        new_code_cell("print(ratio)"),
        new_code_cell(block("if ratio > 0:\n    label = 'positive'\nelse:\n    label = 'negative'")),
        new_code_cell("print(label)"),
    ]
    run_cells(solution)
    run_cells(student_notebook(solution))


def test_a_malformed_cell_is_refused_with_its_reason():
    solution = solution_notebook()
    solution.cells[2].source += f"\n{END}\n"
    with pytest.raises(AssignError, match="without"):
        student_notebook(solution)


# -- assign -------------------------------------------------------------------------------------------


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture
def course(tmp_path):
    source, dest = tmp_path / "solutions", tmp_path / "labs"
    source.mkdir()
    dest.mkdir()
    nbformat.write(solution_notebook(), source / "01_first.ipynb")
    second = solution_notebook()
    second.cells = second.cells[:3]
    nbformat.write(second, source / "02_second.ipynb")
    nbformat.write(new_notebook(), source / "scratch.ipynb")  # not a lab: ignored
    return source, dest


def test_assign_round_trip(course):
    source, dest = course
    first = assign(source, dest)
    assert sorted(p.name for p in first.written) == ["01_first.ipynb", "02_second.ipynb"]
    assert first.out_of_sync == [] and first.stale == [] and first.unchanged == []
    assert not (dest / "scratch.ipynb").exists()
    written = nbformat.read(dest / "01_first.ipynb", as_version=4)
    nbformat.validate(written)
    assert written == student_notebook(nbformat.read(source / "01_first.ipynb", as_version=4))

    before, solutions = snapshot(dest), snapshot(source)
    again = assign(source, dest, check=True)
    assert sorted(p.name for p in again.unchanged) == ["01_first.ipynb", "02_second.ipynb"]
    assert again.written == [] and again.out_of_sync == [] and again.stale == []
    assert snapshot(dest) == before and snapshot(source) == solutions, "check wrote something"

    # a second real run is a no-op too
    third = assign(source, dest)
    assert third.written == [] and len(third.unchanged) == 2
    assert snapshot(dest) == before


def test_edited_student_notebook_is_out_of_sync(course):
    source, dest = course
    assign(source, dest)
    target = dest / "01_first.ipynb"
    nb = nbformat.read(target, as_version=4)
    nb.cells[4].source = "threshold = 2.0  # a student's own answer, committed by mistake"
    nbformat.write(nb, target)
    before = snapshot(dest)

    result = assign(source, dest, check=True)
    assert result.out_of_sync == [target]
    assert [p.name for p in result.unchanged] == ["02_second.ipynb"]
    assert snapshot(dest) == before

    fixed = assign(source, dest)
    assert fixed.written == [target]
    assert assign(source, dest, check=True).out_of_sync == []


def test_edited_solution_is_out_of_sync(course):
    source, dest = course
    assign(source, dest)
    nb = nbformat.read(source / "02_second.ipynb", as_version=4)
    nb.cells.append(new_markdown_cell("One more thing."))
    nbformat.write(nb, source / "02_second.ipynb")
    result = assign(source, dest, check=True)
    assert result.out_of_sync == [dest / "02_second.ipynb"]


def test_missing_student_notebook_is_out_of_sync(course):
    source, dest = course
    assign(source, dest)
    (dest / "01_first.ipynb").unlink()
    result = assign(source, dest, check=True)
    assert result.out_of_sync == [dest / "01_first.ipynb"]
    assert not (dest / "01_first.ipynb").exists()


def test_student_notebook_without_solution_is_stale(course):
    source, dest = course
    assign(source, dest)
    orphan = dest / "03_orphan.ipynb"
    nbformat.write(new_notebook(), orphan)
    for checking in (True, False):
        result = assign(source, dest, check=checking)
        assert result.stale == [orphan]
        assert orphan.exists(), "stale notebooks are reported, never deleted"


def test_malformed_solution_names_the_file(course):
    source, dest = course
    nb = nbformat.read(source / "02_second.ipynb", as_version=4)
    nb.cells.append(new_code_cell(f"{BEGIN}\nx = 1\n"))
    nbformat.write(nb, source / "02_second.ipynb")
    with pytest.raises(AssignError, match="02_second.ipynb"):
        assign(source, dest)


def test_missing_source_folder(tmp_path):
    with pytest.raises(AssignError, match="not a folder"):
        assign(tmp_path / "nowhere", tmp_path)

