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
    """Raised by a check function: the answer is wrong; the message says how."""


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
    hint: str | None
    title: str
    time_limit: float | None = None  # None: TIME_LIMIT

    @property
    def seconds(self) -> float:
        return self.time_limit or TIME_LIMIT


REGISTRY: dict[str, CheckSpec] = {}


def register(name: str, *, points: float = 1, hint: str | None = None, title: str = "",
             time_limit: float | None = None):
    """Register ``function(answer, rng) -> message`` as the check ``name`` (``"NN.slug"``).

    ``time_limit`` (seconds) is for checks that do slow work of their own, such as starting a server for the
    student's runtime, so that a busy machine is not mistaken for an endless loop in the answer.
    """

    def decorate(function):
        REGISTRY[name] = CheckSpec(name, function, points, hint, title or name, time_limit)
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


def safe_repr(value: Any, limit: int = 80) -> str:
    """``repr`` that survives objects whose ``__repr__`` raises, shortened to ``limit``."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        return verdict("failed", str(e))
    except _TimeUp:
        return verdict("failed", f"Your code ran for more than {spec.seconds:g} s while being checked; "
                       "look for an endless loop or work that can be done once, outside the function.")
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the student's code may raise anything, SystemExit included
        details["traceback"] = traceback.format_exc(limit=-3)
        return verdict("failed", f"Checking your answer raised {type(e).__name__}: {_safe_str(e)}")
    return verdict("passed", message or "Well done.", spec.points)


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)[:300]
    except Exception:
        return "(its message could not be shown)"


__all__ = [
    "MIME_TYPE", "Fail", "Feedback", "NotAttempted", "check", "evaluate", "expect_function", "model_folder_repository",
    "names", "register", "safe_repr", "serve_for_check", "server_error_reason",
]
