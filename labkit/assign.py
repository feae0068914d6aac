"""Generate student notebooks from the solution notebooks (``labkit assign``); grading is ``labkit.grading``.

Solution code sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``
(nbgrader's and otter-grader's convention). In the student version:

- an indented block (keep those inside functions) becomes
  ``raise NotImplementedError(...)``, so a check that calls the function reports
  "not attempted yet";
- a top-level block becomes ``name = ...`` for each name it assigns, so the
  notebook still runs top to bottom and its checks see the ``...`` placeholder.

Outputs and execution counts are cleared; everything else, cell ids included,
is kept, so exercises can be matched between the two versions.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import nbformat

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
PLACEHOLDER_COMMENT = "# YOUR CODE HERE"
NOTEBOOK_NAME = re.compile(r"^\d\d_[a-z0-9_]+\.ipynb$")


class AssignError(ValueError):
    """A solution notebook's markers are malformed."""


class _Bindings(ast.NodeVisitor):
    """Names a block binds in the notebook's namespace, in order; function and class bodies excluded."""

    def __init__(self):
        self.names: list[str] = []

    def add(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store):
            self.add(node.id)

    def visit_FunctionDef(self, node) -> None:
        self.add(node.name)  # the body binds locals only

    visit_AsyncFunctionDef = visit_ClassDef = visit_FunctionDef

    def visit_Lambda(self, node) -> None:
        pass  # its parameters and comprehension variables are local to it

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_Lambda

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.add(node.name)
        self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> None:
        if node.name != "*":
            self.add(node.asname or node.name.split(".")[0])


def _assigned_names(code: str) -> list[str]:
    """Names that ``code`` binds at the top level of a notebook, in order of first appearance."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise AssignError(f"solution block does not parse: {e}") from None
    bindings = _Bindings()
    bindings.visit(tree)
    return bindings.names


def _placeholder(block: list[str], indent: str) -> list[str]:
    if indent:
        return [
            f"{indent}{PLACEHOLDER_COMMENT}\n",
            f'{indent}raise NotImplementedError("Replace this line with your code")\n',
        ]
    names = _assigned_names(textwrap.dedent("".join(block)))
    if not names:
        return [f"{PLACEHOLDER_COMMENT}\n"]
    return [f"{PLACEHOLDER_COMMENT}: replace each ... with your answer\n"] + [f"{n} = ...\n" for n in names]


def strip_solutions(source: str) -> str:
    """The student version of one code cell's source."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped == END:
            raise AssignError(f"{END} without {BEGIN}")
        if stripped != BEGIN:
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        j = i + 1
        while j < len(lines) and lines[j].strip() != END:
            if lines[j].strip() == BEGIN:
                raise AssignError(f"nested {BEGIN}")
            j += 1
        if j == len(lines):
            raise AssignError(f"{BEGIN} without {END}")
        out.extend(_placeholder(lines[i + 1 : j], indent))
        i = j + 1
    text = "".join(out)
    return text[:-1] if text.endswith("\n") and not source.endswith("\n") else text


def student_notebook(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(solution)  # a deep copy
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.source = strip_solutions(cell.source)
        cell.outputs = []
        cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.setdefault("labkit", {})["generated_from"] = "solutions"
    return nb


@dataclass
class AssignResult:
    written: list[Path]
    unchanged: list[Path]
    out_of_sync: list[Path]
    stale: list[Path]  # student notebooks without a solution


def assign(source: Path | str = "labs/solutions", dest: Path | str = "labs", *, check: bool = False) -> AssignResult:
    """Write ``dest/NN_*.ipynb`` from ``source/NN_*.ipynb``; with ``check``, write nothing and report."""
    source, dest = Path(source), Path(dest)
    if not source.is_dir():
        raise AssignError(f"{source} is not a folder of solution notebooks")
    result = AssignResult([], [], [], [])
    solutions = sorted(p for p in source.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))
    for path in solutions:
        try:
            text = nbformat.writes(student_notebook(nbformat.read(path, as_version=4))) + "\n"
        except AssignError as e:
            raise AssignError(f"{path}: {e}") from None
        target = dest / path.name
        if target.exists() and target.read_text() == text:
            result.unchanged.append(target)
        elif check:
            result.out_of_sync.append(target)
        else:
            target.write_text(text)
            result.written.append(target)
    names = {p.name for p in solutions}
    result.stale = sorted(p for p in dest.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name) and p.name not in names)
    return result
