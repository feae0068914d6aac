"""What grading a lab needs: its exercises (from the solution's check cells), options, and a submission's
result."""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from labkit import course

STATUSES = ("OK", "NOT_ATTEMPTED", "ERROR", "TIMEOUT", "KERNEL_DIED")  # a row shows the most severe one
CHECK_NAME = re.compile(r"^\d\d\.[A-Za-z0-9_]+$")


@dataclass
class Options:
    timeout_cell: float = 60  # seconds per cell
    timeout_notebook: float = 300  # seconds for all cells of a notebook (checks have their own limits)
    memory_mb: int = 4096  # address-space cap of the kernel (and of each process it starts)
    max_output_mb: float = 5  # outputs kept per notebook; the rest is dropped and logged
    max_restarts: int = 2  # kernel restarts after a death, skipping the cell that killed it
    sandbox: bool = True  # each submission in its own boxes (labkit.grading.sandbox); False for trusted ones
    max_processes: int = 512  # processes and threads of one submission's box
    disk_mb: int = 1024  # the submission's work folder (a size-capped tmpfs)


@dataclass
class Exercise:
    name: str  # "01.request"
    expression: str  # what the solution passes to check(), e.g. "make_request"
    cell_id: str  # the solution's check cell
    before: list[str]  # ids of the solution's earlier cells, nearest first: where to look if the check cell is gone


def exercises(solution: nbformat.NotebookNode | Path | str) -> list[Exercise]:
    """The exercises of a solution notebook, from its ``check("NN.slug", expression)`` cells."""
    nb = solution if isinstance(solution, nbformat.NotebookNode) else nbformat.read(solution, as_version=4)
    found: list[Exercise] = []
    ids: list[str] = []
    for cell in nb.cells:
        cell_id = cell.get("id", "")
        if cell.cell_type == "code":
            for name, expression in _check_calls(cell.source):
                found.append(Exercise(name, expression, cell_id, list(reversed(ids))))
        ids.append(cell_id)
    return found


def _check_calls(source: str) -> list[tuple[str, str]]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    calls = []
    for node in ast.walk(tree):
        if _is_check_call(node):
            expression = ast.get_source_segment(source, node.args[1]) if len(node.args) > 1 else "..."
            calls.append((node.args[0].value, expression))
    return calls


def _is_check_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call) or not node.args:
        return False
    func = node.func
    named = (isinstance(func, ast.Name) and func.id == "check") or (isinstance(func, ast.Attribute)
                                                                    and func.attr == "check")
    first = node.args[0]
    return named and isinstance(first, ast.Constant) and isinstance(first.value, str) and bool(
        CHECK_NAME.match(first.value))


def without_checks(source: str) -> str:
    """A cell's source without its top-level ``check("NN.slug", ...)`` statements (they decide nothing here)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source  # run as it is: the kernel reports the error
    lines = source.splitlines(keepends=True)
    for node in reversed(tree.body):
        if isinstance(node, ast.Expr) and _is_check_call(node.value):
            lines[node.lineno - 1: node.end_lineno] = []
    return "".join(lines)


@dataclass
class Result:
    """The grade of one submission: what grades.csv, the feedback files and the summary are made from."""

    student: str
    file: str
    status: str
    score: float
    max_score: float
    exercises: list[dict]  # Feedback records, with title
    anomalies: list[str] = field(default_factory=list)
    sha256: str = ""
    lab: str = ""  # with sha256 and key_id: what a later run needs to tell that this row is still valid
    key_id: str = ""  # a fingerprint of the grading key (never the key)
    seconds: float = 0.0  # not written to the reports (they stay byte-identical from run to run)

    def record(self) -> dict:
        record = asdict(self)
        record.pop("seconds")
        return record


@dataclass
class Lab:
    """What grading one lab needs: its number, solution notebook and exercises."""

    number: str
    solution: Path
    exercises: list[Exercise]

    @classmethod
    def find(cls, number: str, solutions: Path | str | None = None) -> Lab:
        number = f"{int(number):02d}" if str(number).isdigit() else str(number)
        folders = [Path(solutions)] if solutions else [course.solutions()]
        for folder in folders:
            matches = sorted(folder.glob(f"{number}_*.ipynb"))
            if matches:
                return cls(number, matches[0], exercises(matches[0]))
        raise FileNotFoundError(f"no solution notebook for lab {number} in {', '.join(map(str, folders))}")

    @property
    def folder(self) -> Path:
        """The student-facing lab folder (``labs/``), whose support files each run gets a copy of."""
        return self.solution.parent.parent

    @property
    def max_score(self) -> float:
        from labkit.checks import REGISTRY, names

        names(self.number)
        return float(sum(REGISTRY[e.name].points for e in self.exercises if e.name in REGISTRY))


def _title(exercise: Exercise) -> str:
    from labkit.checks import REGISTRY

    spec = REGISTRY.get(exercise.name)
    return spec.title if spec else exercise.name


def _feedback(exercise: Exercise, status: str, message: str) -> dict:
    """A verdict the grader gives without running the check (no answer, not a notebook, ...)."""
    from labkit.checks import REGISTRY, Feedback

    spec = REGISTRY.get(exercise.name)
    record = Feedback(exercise.name, False, 0.0, spec.points if spec else 0.0, message,
                      spec.hint if spec else None, status).record()
    record["title"] = _title(exercise)
    return record


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _check_seconds(name: str) -> float:
    """The time limit of one check: its own if it sets one (checks that start a server do), else the default."""
    from labkit.checks import REGISTRY, TIME_LIMIT, names

    names(name.split(".", 1)[0])  # registers the lab's checks
    spec = REGISTRY.get(name)
    return spec.seconds if spec else TIME_LIMIT
