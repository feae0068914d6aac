"""Grade one submission in a fresh kernel: run its cells, check each exercise where the solution checks it."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat

from labkit.grading.kernel import Missing, _Kernel
from labkit.grading.lab import (
    STATUSES, Exercise, Lab, Options, Result, _check_seconds, _feedback, _source, _title, without_checks,
)


def _seed(key: bytes, student: str, exercise: str) -> int:
    """Hidden cases that differ between students but not between runs (the key stays with the grader)."""
    return int.from_bytes(hmac.new(key, f"{student}\0{exercise}".encode(), hashlib.sha256).digest()[:4], "big")


def key_id(key: bytes) -> str:
    """A fingerprint that tells grading keys apart without revealing them."""
    return hmac.new(key, b"labkit key id", hashlib.sha256).hexdigest()[:16] if key else ""


def grade_notebook(path: Path | str, lab: Lab, *, student: str | None = None, key: bytes = b"",
                   options: Options | None = None, marker: str | None = None, policy=None) -> Result:
    """Grade one submission in a fresh kernel (in a box when ``policy``, a ``sandbox.Policy``, is given); never
    raises on what the file contains."""
    from labkit.checks import names

    options = options or Options()
    path = Path(path)
    started = time.monotonic()
    names(lab.number)  # load the lab's checks now, before any student code runs
    student = student or path.stem
    data = path.read_bytes() if path.is_file() else b""
    result = Result(student, str(path), "OK", 0.0, lab.max_score, [], sha256=hashlib.sha256(data).hexdigest(),
                    lab=lab.number, key_id=key_id(key))

    feedback = _feedback
    try:
        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no cells")
    except Exception as e:
        result.status = "ERROR"
        result.anomalies.append(f"not a notebook: {type(e).__name__}: {str(e)[:200]}")
        result.exercises = [feedback(e, "error", "The file is not a Jupyter notebook that could be read.")
                            for e in lab.exercises]
        result.seconds = time.monotonic() - started
        return result

    with tempfile.TemporaryDirectory(prefix="labkit-grade-") as tmp:
        workdir = Path(tmp) / "lab"
        _copy_support_files(lab.folder, workdir)
        kernel = _Kernel(workdir, options, marker, policy)
        try:
            _grade_in_kernel(nb, lab, kernel, result, key, options, feedback)
        except Exception as e:  # the grader's own failure must not lose the row
            result.status = "ERROR"
            result.anomalies.append(f"grader error: {type(e).__name__}: {str(e)[:300]}")
        finally:
            kernel.cleanup()
    graded = {r["name"] for r in result.exercises}
    result.exercises += [feedback(e, "error", "Not graded: the grader stopped early.")
                         for e in lab.exercises if e.name not in graded]
    result.score = float(sum(r["points"] for r in result.exercises))
    if result.status == "OK" and any(r["status"] == "not_attempted" for r in result.exercises):
        result.status = "NOT_ATTEMPTED"
    result.seconds = time.monotonic() - started
    return result


def _copy_support_files(lab_folder: Path, workdir: Path) -> None:
    """A clean copy of what the notebooks use next to them (e.g. ``runtimes/``), without notebooks or work."""
    workdir.mkdir(parents=True)
    if not lab_folder.is_dir():
        return
    for item in lab_folder.iterdir():
        if item.name.startswith(".") or item.name in ("solutions", "work") or item.suffix == ".ipynb":
            continue
        if item.is_dir():
            shutil.copytree(item, workdir / item.name, ignore=shutil.ignore_patterns("__pycache__", ".*"))
        else:
            shutil.copy2(item, workdir / item.name)


def _worse(a: str, b: str) -> str:
    return max(a, b, key=STATUSES.index)


def _grade_in_kernel(nb, lab: Lab, kernel: _Kernel, result: Result, key: bytes, options: Options, feedback):
    """Run the cells; check each exercise where the solution checks it, as the notebook would."""
    cells = [c for c in nb.cells if c.get("cell_type") == "code"]
    positions = {c.get("id"): i for i, c in enumerate(cells) if c.get("id")}
    # An exercise is checked after its check cell if the submission still has it, else after the nearest
    # earlier cell of the solution that it has, else at the end.
    anchors: dict[int, list[Exercise]] = {}
    for exercise in lab.exercises:
        where = next((positions[i] for i in [exercise.cell_id, *exercise.before] if i in positions), len(cells))
        anchors.setdefault(where, []).append(exercise)
    last_anchor = max(anchors, default=len(cells))
    skip: set[int] = set()  # cells that killed the kernel
    graded: dict[str, dict] = {}
    pending: dict[str, dict] = {}  # not attempted where expected: looked at again once every cell has run

    def grade(exercise: Exercise, final: bool) -> bool:
        """Check one exercise now; False if the kernel died."""
        answer = kernel.answer(exercise.expression)
        if kernel.dead:
            return False
        if isinstance(answer, Missing):
            verdict = feedback(exercise, "not_attempted", f"No answer: {answer.reason}.")
        else:  # a ``...`` answer included: the check says "not attempted" in its own words
            verdict = _check(exercise, answer, kernel, key, result.student)
        if kernel.dead:
            graded[exercise.name] = verdict
            result.anomalies.append(f"the kernel died while {exercise.name} was checked")
            return False
        if verdict["status"] == "not_attempted" and not final:
            pending[exercise.name] = verdict
        else:
            graded[exercise.name] = verdict
            pending.pop(exercise.name, None)
        return True

    def run_cells() -> bool:
        """One pass over the notebook; False if the kernel died (the killing cell is skipped next time)."""
        deadline = time.monotonic() + options.timeout_notebook
        for i in range(len(cells) + 1):
            if i > last_anchor and not pending:
                return True  # every exercise is graded: later cells cannot change a verdict
            if i < len(cells) and i not in skip:
                left = deadline - time.monotonic()
                if left <= 0:
                    result.status = _worse(result.status, "TIMEOUT")
                    result.anomalies.append(f"the notebook ran out of its {options.timeout_notebook:g} s "
                                            f"at cell {i + 1}; later cells were not run")
                    break
                status = kernel.run(without_checks(_source(cells[i])), min(options.timeout_cell, left))
                if status == "timeout":
                    result.status = _worse(result.status, "TIMEOUT")
                    result.anomalies.append(f"cell {i + 1} ran over {options.timeout_cell:g} s and was interrupted")
                elif status == "error":
                    result.status = _worse(result.status, "ERROR")
                    result.anomalies.append(f"cell {i + 1} raised {kernel.errors[-1] if kernel.errors else 'an error'}")
                elif status == "hung":
                    result.status = _worse(result.status, "TIMEOUT")
                    result.anomalies.append(f"cell {i + 1} ran over {options.timeout_cell:g} s and ignored the "
                                            "interrupt: the kernel was restarted without it")
                    skip.add(i)
                    return False
                elif status == "died":
                    result.status = _worse(result.status, "KERNEL_DIED")
                    result.anomalies.append(f"the kernel died in cell {i + 1}")
                    skip.add(i)
                    return False
            for exercise in anchors.get(i, []):
                if exercise.name not in graded and not grade(exercise, final=False):
                    result.status = _worse(result.status, "KERNEL_DIED")
                    return False
        for exercise in lab.exercises:  # a second look at the end (moved or duplicated cells)
            if exercise.name in pending and not kernel.dead and not grade(exercise, final=True):
                result.status = _worse(result.status, "KERNEL_DIED")
                return False
        return True

    restarts = 0
    while True:
        kernel.start()
        if run_cells():
            break
        restarts += 1
        if restarts > options.max_restarts:
            result.anomalies.append("the kernel kept dying: gave up")
            break
        kernel.stop()
    graded.update({name: verdict for name, verdict in pending.items() if name not in graded})
    if kernel.output_dropped:
        result.anomalies.append(f"output over {options.max_output_mb:g} MB: {kernel.output_dropped} outputs dropped")
    result.exercises = [graded[e.name] for e in lab.exercises if e.name in graded]


def _check(exercise: Exercise, answer: Any, kernel: _Kernel, key: bytes, student: str) -> dict:
    from labkit.checks import evaluate

    confined = _confine(answer, kernel.workdir)
    if confined is not None:
        return _feedback(exercise, "failed", confined)
    here = os.getcwd()
    # The kernel's deadline is the limit: past it, the cell running the student's code is interrupted and
    # the check gets _TimeUp. The alarm inside evaluate() is only a backstop, late enough never to fire
    # inside nbclient first (its timeouts are whole seconds, and an interrupted cell gets a 5 s probe).
    seconds = _check_seconds(exercise.name)
    kernel.deadline = time.monotonic() + seconds
    try:
        os.chdir(kernel.workdir)  # a path answer is relative to the notebook's folder, as in the notebook
        feedback = evaluate(exercise.name, answer, seed=_seed(key, student, exercise.name),
                            time_limit=seconds + 10)
    finally:
        os.chdir(here)
        kernel.deadline = None
    record = feedback.record()
    record["details"] = {}  # seeds and grader-side tracebacks stay with the grader
    record["title"] = _title(exercise)
    return record


def _confine(answer: Any, workdir: Path) -> str | None:
    """A message if a path answer leads outside the notebook's folder (that copy is all the grader trusts)."""
    if not isinstance(answer, str) or not answer or len(answer) > 4096 or "\0" in answer:
        return None
    root = workdir.resolve()
    target = (workdir / answer)
    try:
        if not target.exists() and not target.is_symlink():
            return None
        resolved = target.resolve()
        inside = resolved == root or root in resolved.parents
        if inside and resolved.is_dir():
            for item in resolved.rglob("*"):
                if item.is_symlink() and root not in item.resolve().parents:
                    inside = False
                    break
    except (OSError, RuntimeError):
        return "The path in the answer could not be read."
    if not inside:
        return ("The answer points outside the notebook's folder; give a path relative to the notebook, "
                "to files the notebook wrote.")
    return None
