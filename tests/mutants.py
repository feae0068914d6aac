"""Mutation testing of the checks: every small change to a solution must fail its check.

    .venv/bin/python tests/mutants.py                 # every exercise: survivors, then a score per lab
    .venv/bin/python tests/mutants.py 04.policy 09    # one check, or every check of a lab

An exercise is a ``check("NN.name", answer)`` cell of a solution notebook and the solution cell before it.
The code between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` is mutated one change at a time with Python's
``ast`` (the operators of mutmut and cosmic-ray, below); each mutant is executed in a namespace made of the
notebook's imports and the earlier definitions it names, and judged by its check on seeds 0-2. A mutant
*survives* when it passes on any seed. A survivor must be listed in ``tests/equivalent_mutants.toml`` with the
reason it means the same as the solution on every input the exercise allows; tests/test_mutants.py fails on
any other survivor. Runtime answers (a ``%%writefile`` cell that a model folder serves) are mutated the same
way by tests/test_mutants.py, which builds their folders.
"""

from __future__ import annotations

import ast
import builtins
import copy
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "labs" / "solutions"
EQUIVALENTS = Path(__file__).with_name("equivalent_mutants.toml")
SEEDS = (0, 1, 2)
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CHECK_CALL = re.compile(r'check\(\s*"(\d\d\.\w+)"\s*,\s*(.+)\)\s*$', re.S)

# Exercises whose answer is built from state that only a notebook run makes (a trained model): the test
# module named here supplies that state (``state()`` there returns the names), so their mutants are judged too.
STATE_FROM = {"07.vae_score": "test_checks_lab07", "08.adversarial_score": "test_checks_lab08"}

# Exercises whose answer is a model folder that the cell assembles from the notebook's trained models and a
# runtime the lab provides (students write no runtime code there): their wrong folders are the hand-written
# cases of tests/test_checks_labNN.py; what students write as a runtime (02, 05) is mutated by test_mutants.py.
ASSEMBLED_FOLDERS = {"07.runtime", "08.runtime"}

# -- operators ---------------------------------------------------------------------------------------------
COMPARE = {ast.Lt: (ast.LtE, ast.Gt), ast.LtE: (ast.Lt, ast.GtE), ast.Gt: (ast.GtE, ast.Lt),
           ast.GtE: (ast.Gt, ast.LtE), ast.Eq: (ast.NotEq,), ast.NotEq: (ast.Eq,), ast.In: (ast.NotIn,),
           ast.NotIn: (ast.In,), ast.Is: (ast.IsNot,), ast.IsNot: (ast.Is,)}
ARITHMETIC = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
              ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}
SWAPPED_CALLS = {"min": "max", "max": "min", "any": "all", "all": "any"}


def _nudged(value) -> list:
    """A number's mutants: zeroed, and moved (ints by one, floats by half)."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return ([0] if value != 0 else []) + [value + 1]
    if isinstance(value, float):
        return ([0.0] if value != 0 else []) + [value * 1.5 if value else 1.0]
    return []


@dataclass
class Mutant:
    id: str  # stable across edits elsewhere: the operator and the source line it changes
    line: int
    source: str


class _Mutator(ast.NodeTransformer):
    """Walks a tree; counts the mutation sites inside ``lines``, and applies the one numbered ``target``."""

    def __init__(self, lines: set[int], target: int, source_lines: list[str]):
        self.lines, self.target, self.source_lines = lines, target, source_lines
        self.count, self.applied, self.sites = 0, None, []

    def _site(self, node, what: str) -> bool:
        """Register one site; True if it is the one to apply."""
        line = getattr(node, "lineno", 0)
        text = self.source_lines[line - 1].strip() if 0 < line <= len(self.source_lines) else ""
        self.sites.append((what, line, text))
        hit = self.count == self.target
        self.count += 1
        if hit:
            self.applied = (what, line, text)
        return hit

    def _inside(self, node) -> bool:
        return getattr(node, "lineno", 0) in self.lines

    def visit_Compare(self, node):
        self.generic_visit(node)
        if self._inside(node):
            for i, op in enumerate(node.ops):
                for other in COMPARE.get(type(op), ()):
                    if self._site(node, f"{type(op).__name__} -> {other.__name__}"):
                        node.ops[i] = other()
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        other = ARITHMETIC.get(type(node.op))
        if other and self._inside(node) and self._site(node, f"{type(node.op).__name__} -> {other.__name__}"):
            node.op = other()
        return node

    def visit_AugAssign(self, node):
        self.generic_visit(node)
        other = ARITHMETIC.get(type(node.op))
        if other and self._inside(node) and self._site(node, f"{type(node.op).__name__}= -> {other.__name__}="):
            node.op = other()
        return self._statement(node)

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        other = ast.Or if isinstance(node.op, ast.And) else ast.And
        if self._inside(node) and self._site(node, f"{type(node.op).__name__} -> {other.__name__}"):
            node.op = other()
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, (ast.Not, ast.USub)) and self._inside(node) and \
                self._site(node, f"{type(node.op).__name__} removed"):
            return node.operand
        return node

    def _negated_test(self, node):
        if self._inside(node) and self._site(node, "condition negated"):
            node.test = ast.UnaryOp(ast.Not(), node.test)

    def visit_If(self, node):
        self.generic_visit(node)
        self._negated_test(node)
        return self._statement(node)

    def visit_While(self, node):
        self.generic_visit(node)
        self._negated_test(node)
        return self._statement(node)

    def visit_IfExp(self, node):
        self.generic_visit(node)
        self._negated_test(node)
        if self._inside(node):
            for branch in ("body", "orelse"):
                if self._site(node, f"conditional replaced by its {'if' if branch == 'body' else 'else'} value"):
                    return getattr(node, branch)
        return node

    def visit_Constant(self, node):
        if self._inside(node):
            for value in _nudged(node.value):
                if self._site(node, f"{node.value!r} -> {value!r}"):
                    return ast.Constant(value)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if not self._inside(node):
            return node
        if isinstance(node.func, ast.Name) and node.func.id in SWAPPED_CALLS:
            other = SWAPPED_CALLS[node.func.id]
            if self._site(node, f"{node.func.id} -> {other}"):
                node.func = ast.Name(other, ast.Load())
        for i, keyword in enumerate(list(node.keywords)):
            if keyword.arg and self._site(node, f"argument {keyword.arg}= dropped"):
                del node.keywords[i]
                break
        return node

    def visit_Return(self, node):
        self.generic_visit(node)
        if self._inside(node) and isinstance(node.value, (ast.Compare, ast.BoolOp)):
            for value in (True, False):
                if self._site(node, f"return {value}"):
                    node.value = ast.Constant(value)
        return self._statement(node)

    def visit_FunctionDef(self, node):
        self.generic_visit(node)
        body_lines = {getattr(s, "lineno", 0) for s in node.body}
        if body_lines & self.lines:  # the solution is this function's body: ignore a defaulted argument
            arguments = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
            defaults += node.args.kw_defaults
            for argument, default in zip(arguments, defaults, strict=True):
                if default is not None and self._site(node, f"argument {argument.arg} ignored "
                                                                    f"(its default {ast.unparse(default)} used)"):
                    node.body.insert(0, ast.Assign([ast.Name(argument.arg, ast.Store())], copy.deepcopy(default),
                                                   lineno=node.body[0].lineno))
        return self._statement(node)

    def generic_visit(self, node):
        super().generic_visit(node)
        return node

    def _statement(self, node):
        """A statement's own mutant: deleted (``pass`` in its place)."""
        if self._inside(node) and self._site(node, "statement deleted"):
            return ast.Pass(lineno=node.lineno)
        return node

    def visit_Assign(self, node):
        self.generic_visit(node)
        return self._statement(node)

    visit_AnnAssign = visit_Expr = visit_For = visit_Raise = visit_Assert = visit_Assign
    visit_Break = visit_Continue = visit_Assign


def _python(source: str) -> str:
    """A cell's source as Python, line for line: IPython magics become comments."""
    return "\n".join("#" + line if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def solution_lines(source: str) -> set[int]:
    """The line numbers (1-based) between the solution markers of every block, the markers excluded."""
    lines, inside, found = source.splitlines(), False, set()
    for number, line in enumerate(lines, start=1):
        if BEGIN in line:
            inside = True
        elif END in line:
            inside = False
        elif inside:
            found.add(number)
    return found


def mutants(source: str) -> Iterator[Mutant]:
    """Every mutant of the solution code in ``source`` (a cell), one change each, with a stable id."""
    python = _python(source)
    lines, text = solution_lines(source), python.splitlines()
    survey = _Mutator(lines, -1, text)
    survey.visit(ast.parse(python))
    seen: dict[str, int] = {}
    for number in range(survey.count):
        mutator = _Mutator(lines, number, text)
        tree = ast.fix_missing_locations(mutator.visit(ast.parse(python)))
        what, line, code = mutator.applied
        key = f"{what} in `{code}`"
        seen[key] = seen.get(key, 0) + 1
        yield Mutant(key if seen[key] == 1 else f"{key} #{seen[key]}", line, ast.unparse(tree))


# -- exercises ----------------------------------------------------------------------------------------------
@dataclass
class Exercise:
    name: str  # the check's name, "04.policy"
    notebook: Path
    answer: str  # the expression the check cell passes, evaluated after the solution cell ran
    cell: int  # the solution cell's index
    cells: list = field(repr=False, default_factory=list)

    @property
    def lab(self) -> str:
        return self.name.split(".")[0]

    @property
    def source(self) -> str:
        return self.cells[self.cell].source

    @property
    def kind(self) -> str:
        """``function`` (the answer is made by running the cell) or ``runtime`` (a %%writefile cell served from
        a model folder) or ``folder`` (the cell builds a model folder from a notebook's trained models)."""
        if self.name in ASSEMBLED_FOLDERS:
            return "folder"
        if self.source.startswith("%%writefile"):
            return "runtime"
        if self.answer.startswith('"'):
            return "runtime"
        return "function"


def exercises() -> list[Exercise]:
    """Every checked exercise of the solution notebooks, in lab order."""
    found = []
    for path in sorted(SOLUTIONS.glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        for index, cell in enumerate(cells):
            match = CHECK_CALL.match(cell.source.strip()) if cell.cell_type == "code" else None
            if not match:
                continue
            solution = next(i for i in range(index, -1, -1) if BEGIN in cells[i].source)
            if cells[solution].source.startswith("%%writefile") or END not in cells[solution].source:
                solution = next((i for i in range(index, -1, -1) if cells[i].source.startswith("%%writefile")
                                 and BEGIN in cells[i].source), solution)
            found.append(Exercise(match[1], path, match[2].strip(), solution, cells))
    return found


def _free_names(tree: ast.AST) -> set[str]:
    stored = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    stored |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
               for a in n.posonlyargs + n.args + n.kwonlyargs + [n.vararg, n.kwarg] if a}
    stored |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.ExceptHandler))
               if n.name}
    stored |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
               for a in n.names}
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return loaded - stored - set(dir(builtins))


def _definitions(cell_source: str) -> dict[str, ast.stmt]:
    """A code cell's top-level imports, functions, classes and assignments, by the name each defines."""
    try:
        tree = ast.parse(_python(cell_source))
    except SyntaxError:
        return {}
    found = {}
    for statement in tree.body:
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            for alias in statement.names:
                found[(alias.asname or alias.name).split(".")[0]] = statement
        elif isinstance(statement, (ast.FunctionDef, ast.ClassDef)):
            found[statement.name] = statement
        elif isinstance(statement, ast.Assign):
            for target in statement.targets:
                for node in ast.walk(target):
                    if isinstance(node, ast.Name):
                        found[node.id] = statement
    return found


def namespace(exercise: Exercise, state: dict | None = None) -> dict:
    """What the solution cell needs from the notebook: the imports of the cells before it, and the functions,
    classes and simple assignments that it (or what they need in turn) names, as the notebook defined them.
    ``state`` supplies what only a notebook run makes (trained models)."""
    earlier = [c.source for c in exercise.cells[:exercise.cell]
               if c.cell_type == "code" and not c.source.startswith("%%")]
    names: dict = {"__name__": "__main__", **(state or {})}
    for source in earlier:  # every import, in order: cheap, and what the student's kernel has too
        try:
            body = ast.parse(_python(source)).body
        except SyntaxError:
            continue
        for statement in body:
            if isinstance(statement, (ast.Import, ast.ImportFrom)):
                exec(compile(ast.Module([statement], []), "<imports>", "exec"), names)
    definitions = [_definitions(source) for source in reversed(earlier)]
    done: set[str] = set()

    def define(name: str) -> None:  # what a definition names is defined first
        done.add(name)
        statement = next((d[name] for d in definitions if name in d), None)
        if statement is None:
            return  # a name the answer does not need at definition time, or one the state supplies
        for need in sorted(_free_names(statement) - set(names) - done):
            define(need)
        exec(compile(ast.Module([statement], []), f"<{exercise.notebook.name}>", "exec"), names)

    for name in sorted(_free_names(ast.parse(_python(exercise.source))) - set(names)):
        define(name)
    return names


def answer_of(exercise: Exercise, source: str, names: dict):
    """The answer that the check cell passes, after running ``source`` (the solution cell or a mutant)."""
    scope = dict(names)
    exec(compile(source, f"<{exercise.name}>", "exec"), scope)
    return eval(exercise.answer, scope)


# -- judging -----------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    exercise: str
    mutant: str
    passed_seeds: list[int]

    @property
    def survived(self) -> bool:
        return bool(self.passed_seeds)


def _passes(name: str, answer, seed: int) -> bool:
    """The check's verdict on one seed. A mutant may draw from NumPy's global generator (an unseeded KFold): it
    is seeded too, so that a verdict, and the listed survivors, are the same on every run."""
    import numpy as np

    from labkit.checks import evaluate

    np.random.seed(seed)
    return evaluate(name, answer, seed=seed).status == "passed"


def judge(exercise: Exercise, names: dict, seeds=SEEDS, limit: int | None = None) -> list[Verdict]:
    """Each mutant of a function-shaped exercise against its check on ``seeds``."""

    verdicts = []
    for number, mutant in enumerate(mutants(exercise.source)):
        if limit is not None and number >= limit:
            break
        try:
            answer = answer_of(exercise, mutant.source, names)
        except BaseException:  # the mutant does not even define its answer: killed
            answer = None
        # a survivor is a mutant that passes on any seed: a student could rerun the check until it does
        passed = [] if answer is None else [seed for seed in seeds if _passes(exercise.name, answer, seed)]
        verdicts.append(Verdict(exercise.name, mutant.id, passed))
    return verdicts


KINDS = ("equivalent", "also right")


def judge_runtime(exercise: Exercise, folder_for, seeds=(0,)) -> list[Verdict]:
    """Each mutant of a runtime exercise (its ``%%writefile`` cell) against its check: ``folder_for(source,
    path)`` writes a model folder serving that source at ``path`` (under the working folder) and returns it.
    One seed by default: each judgement starts an MLServer."""
    import shutil


    verdicts = []
    for number, mutant in enumerate(mutants(exercise.source)):
        folder = folder_for(mutant.source, Path(f"mutant-{number}"))
        try:
            passed = [seed for seed in seeds if _passes(exercise.name, str(folder), seed)]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        verdicts.append(Verdict(exercise.name, mutant.id, passed))
    return verdicts


def equivalents() -> dict[tuple[str, str], str]:
    """The reviewed list: (check, mutant id) -> its kind and why (see the file's header)."""
    entries = tomllib.loads(EQUIVALENTS.read_text()).get("mutant", [])
    return {(e["check"], e["id"]): f"{e.get('kind', '?')}: {e['reason']}" for e in entries}


def score(verdicts: list[Verdict], listed: dict) -> dict:
    """Per lab: mutants, killed, equivalent (listed survivors), and unlisted survivors."""
    table: dict[str, dict] = {}
    for v in verdicts:
        row = table.setdefault(v.exercise.split(".")[0], {"mutants": 0, "killed": 0, "equivalent": 0,
                                                          "survived": 0})
        row["mutants"] += 1
        if not v.survived:
            row["killed"] += 1
        elif (v.exercise, v.mutant) in listed:
            row["equivalent"] += 1
        else:
            row["survived"] += 1
    return table


def show(table: dict) -> None:
    print(f"{'lab':>4} {'mutants':>8} {'killed':>7} {'equivalent':>11} {'survived':>9}")
    for lab, row in sorted(table.items()):
        print(f"{lab:>4} {row['mutants']:>8} {row['killed']:>7} {row['equivalent']:>11} {row['survived']:>9}")


def main(arguments: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    selected = [e for e in exercises() if e.kind == "function"
                and (not arguments or any(e.name == a or e.lab == a for a in arguments))]
    listed, verdicts = equivalents(), []
    for exercise in selected:
        state = None
        if exercise.name in STATE_FROM:
            state = __import__(STATE_FROM[exercise.name]).state()
        found = judge(exercise, namespace(exercise, state))
        verdicts += found
        for v in found:
            if v.survived:
                mark = "equivalent" if (v.exercise, v.mutant) in listed else "SURVIVED"
                print(f"{mark:>10} {v.exercise}: {v.mutant} (passed seeds {v.passed_seeds})", flush=True)
        print(f"{exercise.name}: {sum(not v.survived for v in found)}/{len(found)} killed", flush=True)
    show(score(verdicts, listed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
