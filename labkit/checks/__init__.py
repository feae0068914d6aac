"""Instant answer checks: ``check("01.request", make_request)`` returns a ``Feedback``.

A check never raises on a student's answer. Each lab's checks live in
``labkit.checks.labNN`` and register themselves with ``@register``; they get a
random generator seeded afresh on every call, so they test hidden cases rather
than one example that could be memorised.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import re
import json
import secrets
import signal
import threading
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np

from labkit.jupyter.progress import record as record_progress

MIME_TYPE = "application/vnd.labkit.check+json"
TIME_LIMIT = 10  # seconds a student's code may run inside one check, unless the check sets its own


class Fail(Exception):
    """Raised by a check function: the answer is wrong; the message says how.

    ``credit`` (0 to 1) is the share of the points a partly right answer earns, e.g. a runtime that refuses 11
    of 13 kinds of bad request.
    """

    def __init__(self, message: str = "", credit: float = 0.0):
        super().__init__(message)
        self.credit = min(max(float(credit), 0.0), 1.0)


class NotAttempted(Exception):
    """Raised by a check function: the answer is still the placeholder."""


class _TimeUp(BaseException):
    """Not an Exception, so a student's ``except Exception`` retry loop cannot swallow it."""


@dataclass
class Feedback:
    """The verdict of one check: rendered as HTML, and carrying a record for grading."""

    name: str
    passed: bool
    points: float
    max_points: float
    message: str
    hint: str | None = None
    status: str = "failed"  # passed, failed, not_attempted or error
    details: dict = field(default_factory=dict)

    def record(self) -> dict:
        return asdict(self)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        text = f"{_LABEL[self.status]} {self.name} ({self.points:g}/{self.max_points:g}): {self.message}"
        if self.hint and not self.passed:
            text += f"\nHint: {self.hint}"
        return text

    def _repr_html_(self) -> str:
        colour = _COLOUR[self.status]
        hint = ""
        if self.hint and not self.passed:
            hint = f"<details><summary>Hint</summary>{html.escape(self.hint)}</details>"
        return (
            f'<div class="labkit-feedback labkit-{self.status}" style="border-left:4px solid {colour};'
            f'padding:4px 10px;margin:4px 0">'
            f'<b style="color:{colour}">{_LABEL[self.status]}</b> <code>{html.escape(self.name)}</code> '
            f"&middot; {self.points:g}/{self.max_points:g} points<br>"
            f'<span style="white-space:pre-wrap">{html.escape(self.message)}</span>{hint}</div>'
        )

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        return {"text/plain": str(self), "text/html": self._repr_html_(), MIME_TYPE: self.record()}


_LABEL = {"passed": "✔ Passed", "failed": "✘ Not yet", "not_attempted": "… Not attempted yet", "error": "⚠ Error"}
_COLOUR = {"passed": "#2e7d32", "failed": "#c62828", "not_attempted": "#757575", "error": "#ef6c00"}


@dataclass
class CheckSpec:
    name: str
    function: Callable[[Any, np.random.Generator], str | None]
    points: float
    hints: tuple[str, ...]  # progressive: the first is shown with a failed check, the others on demand
    title: str
    time_limit: float | None = None  # None: TIME_LIMIT

    @property
    def seconds(self) -> float:
        return self.time_limit or TIME_LIMIT

    @property
    def hint(self) -> str | None:
        """The hint a failed check shows: the first one, and how to ask for the next."""
        if not self.hints:
            return None
        more = f' More: labkit.hint("{self.name}", 2).' if len(self.hints) > 1 else ""
        return self.hints[0] + more


REGISTRY: dict[str, CheckSpec] = {}


def register(name: str, *, points: float = 1, hint: str | None = None, hints: tuple[str, ...] | list[str] = (),
             title: str = "", time_limit: float | None = None):
    """Register ``function(answer, rng) -> message`` as the check ``name`` (``"NN.slug"``).

    ``hints`` go from general to specific, and never give the solution away; ``hint`` is a single first one.
    ``time_limit`` (seconds) is for checks that do slow work of their own, such as starting a server for the
    student's runtime, so that a busy machine is not mistaken for an endless loop in the answer.
    """
    all_hints = tuple(([hint] if hint else []) + list(hints))

    def decorate(function):
        REGISTRY[name] = CheckSpec(name, function, points, all_hints, title or name, time_limit)
        return function

    return decorate


def _load_lab(name: str) -> None:
    lab = name.split(".", 1)[0]
    if lab.isdigit() and importlib.util.find_spec(f"labkit.checks.lab{lab}") is not None:
        importlib.import_module(f"labkit.checks.lab{lab}")


def names(lab: str | None = None) -> list[str]:
    """Registered check names, for one lab (``"01"``) or for all loaded labs."""
    if lab is not None:
        _load_lab(f"{lab}.")
        return sorted(n for n in REGISTRY if n.startswith(f"{lab}."))
    return sorted(REGISTRY)


def expect_function(answer: Any, name: str, of_what: str) -> None:
    """``Fail`` unless the answer is callable, e.g. ``expect_function(a, "error_rate", "a list of codes")``."""
    if not callable(answer):
        raise Fail(f"{name} should be a function of {of_what}, not {safe_repr(answer)}.")


def number(value: Any, what: str) -> float:
    """``value`` as a float, or a ``Fail`` that names ``what`` it should be (``"error_rate(codes)"``)."""
    if isinstance(value, (str, bytes)):  # "0.5" is not a number a function should return
        raise Fail(f"{what} should be a number, not {safe_repr(value)}.")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise Fail(f"{what} should be a number, not {safe_repr(value)}.") from None


def json_roundtrip(value: Any, what: str) -> Any:
    """``value`` as a client would receive it after JSON; a ``Fail`` if it is not plain JSON data."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as e:
        raise Fail(f"{what} cannot be written as JSON ({_safe_str(e)}); use plain lists, numbers and strings "
                   "(numpy arrays have .tolist()).") from None


def call(function: Callable, shown: str, *args, **kwargs) -> Any:
    """``function(*args, **kwargs)``; if the student's code raises, a ``Fail`` naming the call (``shown``)
    that raised, so that the student can run it again. ``NotImplementedError`` still means not attempted."""
    try:
        return function(*args, **kwargs)
    except (NotImplementedError, Fail, NotAttempted):
        raise
    except Exception as e:
        raise Fail(f"{shown} raised {type(e).__name__}: {_safe_str(e)}") from None


def safe_repr(value: Any, limit: int = 80) -> str:
    """``repr`` that survives objects whose ``__repr__`` raises, shortened to ``limit``."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def finite_scores(value, n: int, call: str) -> np.ndarray:
    """``value`` as ``n`` finite scores, one per row, or a ``Fail`` that says what came back."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Fail(f"{call} returned {safe_repr(value)}; return one number per row.") from None
    if array.shape not in ((n,), (n, 1)):
        raise Fail(f"{call} returned shape {array.shape}; expected {n} scores, one per row.")
    if not np.isfinite(array).all():
        raise Fail(f"{call} returned NaN or infinite scores; every score must be a finite number.")
    return array.reshape(n)


def roc_auc(clean: np.ndarray, flagged: np.ndarray) -> float:
    """ROC AUC: the probability that a row that should be flagged scores above a clean one (ties count half)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(clean)), np.ones(len(flagged))], np.r_[clean, flagged]))


@contextmanager
def _time_limit(seconds: float):
    """Interrupt student code that runs too long (main thread on POSIX only)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(*_):
        raise _TimeUp

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_model_folder(answer: Any) -> tuple[Path, dict]:
    """The model folder a path answer names (relative to the working folder) and its model-settings.json as a
    dict, or a ``Fail`` that says what is missing."""
    import os

    if not isinstance(answer, (str, os.PathLike)):
        raise Fail(f"Pass the model folder's path as a string, not {safe_repr(answer)}.")
    try:
        folder = Path(answer).resolve()
        settings_path = folder / "model-settings.json"
        found = settings_path.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long
        found = False
    if not found:
        raise Fail(f"{safe_repr(str(answer))} is not a model folder: it should contain model-settings.json (run the "
                   "cell that builds the folder).")
    try:
        settings = json.loads(settings_path.read_text())
        if not isinstance(settings, dict):
            raise ValueError(f"it holds a {type(settings).__name__}")
    except (OSError, ValueError) as e:
        raise Fail(f"{settings_path} is not a valid JSON object: {_safe_str(e)}") from None
    return folder, settings


def model_folder_repository(folder) -> Path:
    """A fresh temporary model repository holding ``folder`` (a link, under the folder's own name), for
    ``serve_for_check``; the student's folder is never copied or written to."""
    import tempfile

    folder = Path(folder)
    repository = Path(tempfile.mkdtemp(prefix="labkit-check-"))
    (repository / folder.name).symlink_to(folder, target_is_directory=True)
    return repository


@contextmanager
def serve_for_check(repository, *, timeout: float):
    """Serve ``repository`` (a temporary folder, deleted afterwards) on a fresh one-process MLServer.

    A server that cannot start is a ``Fail`` with the reason from its log. Stopping takes about a second (a
    graceful SIGTERM), which the verdict need not wait for, so it runs in a thread; not a daemon, so Python
    joins it before its exit hooks and a process that ends right away still stops the server in order.
    """
    import shutil

    from labkit.serving import Server, ServerError

    server = None
    try:
        server = Server(repository, settings={"parallel_workers": 0}, timeout=timeout).start()
    except ServerError as e:
        raise Fail(f"MLServer could not load the model from your answer: {server_error_reason(str(e))}") from None
    finally:
        if server is None:  # it did not start, whatever stopped it (a time limit included)
            shutil.rmtree(repository, ignore_errors=True)

    def stop_and_remove():
        server.stop()
        shutil.rmtree(repository, ignore_errors=True)

    try:
        yield server
    finally:
        threading.Thread(target=stop_and_remove, name="labkit-stop-check-server").start()


def server_error_reason(log: str) -> str:
    """The last exception line of a server log (what went wrong), or its last lines. A ``CancelledError`` is
    the server's own shutdown after the failure, not its cause."""
    errors = [line for line in re.findall(r"^[\w.]*(?:Error|Exception)\b.*$", log, flags=re.MULTILINE)
              if "CancelledError" not in line]
    return errors[-1][:500] if errors else "\n".join(log.splitlines()[-6:])[-600:]


def check(name: str, answer: Any = ..., *, seed: int | None = None) -> Feedback:
    """Check ``answer`` for the exercise ``name``; never raises on the answer."""
    return record_progress(evaluate(name, answer, seed=seed))  # for the sidebar; never raises


def evaluate(name: str, answer: Any = ..., *, seed: int | None = None, time_limit: float | None = None) -> Feedback:
    """The verdict of ``check()`` and nothing else: the grader calls this (with a proxy for the answer, and
    ``time_limit`` as a backstop to its own limit on the kernel; by default the check's own limit)."""
    if not isinstance(name, str):
        return Feedback(str(type(name).__name__), False, 0, 0, "The first argument of check() is the "
                        "exercise name, a string such as \"01.request\".", status="error")
    _load_lab(name)
    spec = REGISTRY.get(name)
    if spec is None:
        lab = name.split(".", 1)[0]
        known = ", ".join(names(lab)) or "none for this lab"
        return Feedback(name, False, 0, 0, f"There is no check called {name!r}. Checks of lab {lab}: {known}.",
                        status="error")
    seed = secrets.randbits(32) if seed is None else seed
    details = {"seed": seed}

    def verdict(status, message, points=0.0):
        return Feedback(name, status == "passed", points, spec.points, message, spec.hint, status, details)

    if answer is ...:
        return verdict("not_attempted", "Replace the `...` placeholder with your answer, run that cell, then this one.")
    try:
        with _time_limit(time_limit or spec.seconds):
            message = spec.function(answer, np.random.default_rng(seed))
    except NotImplementedError:
        return verdict("not_attempted", "Your code still raises NotImplementedError: replace the placeholder "
                       "with your solution.")
    except NotAttempted as e:
        return verdict("not_attempted", str(e) or "Not attempted yet.")
    except Fail as e:
        return verdict("failed", str(e), round(spec.points * e.credit, 2))
    except _TimeUp:
        return verdict("failed", f"Your code ran for more than {spec.seconds:g} s while being checked; "
                       "look for an endless loop or work that can be done once, outside the function.")
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the student's code may raise anything, SystemExit included
        details["traceback"] = traceback.format_exc(limit=-3)
        return verdict("failed", f"Checking your answer raised {type(e).__name__}: {_safe_str(e)}")
    return verdict("passed", message or "Well done.", spec.points)


@dataclass(repr=False)
class Hint:
    """One of a check's progressive hints, shown on demand: it runs no check and records nothing (no check
    record for the grader, no progress in the sidebar)."""

    name: str
    level: int
    total: int
    text: str

    def __str__(self) -> str:
        if not self.total:
            return self.text
        text = f"Hint {self.level} of {self.total} for {self.name}: {self.text}"
        if self.level < self.total:
            text += f'\nMore specific: labkit.hint("{self.name}", {self.level + 1})'
        else:
            text += "\nThat was the last hint; the check's message says what your answer got wrong."
        return text

    __repr__ = __str__

    def _repr_html_(self) -> str:
        if not self.total:
            return f'<div class="labkit-hint">{html.escape(self.text)}</div>'
        more = (f'<br><small>More specific: <code>labkit.hint("{html.escape(self.name)}", {self.level + 1})</code>'
                "</small>" if self.level < self.total else "<br><small>That was the last hint.</small>")
        return (f'<div class="labkit-hint" style="border-left:4px solid #1565c0;padding:4px 10px;margin:4px 0">'
                f'<b style="color:#1565c0">Hint {self.level} of {self.total}</b> <code>{html.escape(self.name)}'
                f'</code><br><span style="white-space:pre-wrap">{html.escape(self.text)}</span>{more}</div>')


def hint(name: str, level: int = 1) -> Hint:
    """Hint number ``level`` (1 = the most general) for the exercise ``name``, without checking anything;
    never raises."""
    if not isinstance(name, str):
        return Hint(str(type(name).__name__), 0, 0, 'The first argument of hint() is the exercise name, a string '
                    'such as "01.request".')
    _load_lab(name)
    spec = REGISTRY.get(name)
    if spec is None:
        lab = name.split(".", 1)[0]
        known = ", ".join(names(lab)) if lab.isdigit() else ""
        return Hint(name, 0, 0, f"There is no exercise called {name!r}. Exercises of lab {lab}: "
                    f"{known or 'none'}.")
    if not spec.hints:
        return Hint(name, 0, 0, f"{name} has no hints.")
    try:
        level = int(level)
    except (TypeError, ValueError, OverflowError):
        level = 1
    level = min(max(level, 1), len(spec.hints))
    return Hint(name, level, len(spec.hints), spec.hints[level - 1])


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)[:300]
    except Exception:
        return "(its message could not be shown)"


__all__ = [
    "MIME_TYPE", "Fail", "Feedback", "Hint", "NotAttempted", "call", "check", "evaluate", "expect_function", "hint",
    "json_roundtrip", "model_folder_repository", "names", "number", "read_model_folder", "register", "safe_repr",
    "serve_for_check",
    "server_error_reason",
]
