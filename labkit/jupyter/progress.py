"""The student's progress: the latest result of every check, per lab and exercise.

Checks run in the notebook's kernel; the Jupyter server extension reads the same file to
show progress in the sidebar. The file lives under the Jupyter data dir
(``<data dir>/labkit/progress.json``) and is rewritten atomically (a temporary file, then
``os.replace``) under a file lock, so two kernels checking at once lose nothing and a
crash mid-write leaves the previous version intact.

Recording happens in Jupyter kernels only (not in a plain ``pytest`` or script run), and
``LABKIT_PROGRESS=off`` turns it off, for example while a grader runs submissions.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from labkit.files import write_atomically

VERSION = 1
OFF_VALUES = {"0", "off", "false", "no"}
_warned = False


def progress_path() -> Path:
    """Where progress is kept: ``LABKIT_PROGRESS_FILE``, else ``<jupyter data dir>/labkit/progress.json``."""
    explicit = os.environ.get("LABKIT_PROGRESS_FILE")
    if explicit:
        return Path(explicit)
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "labkit" / "progress.json"


def empty() -> dict:
    return {"version": VERSION, "exercises": {}}


def load(path: Path | None = None) -> dict:
    """The progress on disk; an empty record if there is none or it cannot be read."""
    path = path or progress_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty()
    if not isinstance(data, dict) or not isinstance(data.get("exercises"), dict):
        return empty()
    return data


def store(feedback_record: dict, path: Path | None = None) -> dict:
    """Add one check result (a ``Feedback.record()``) to the progress file; returns the exercise's entry."""
    from filelock import FileLock

    path = path or progress_path()
    name = str(feedback_record["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=5):
        data = load(path)
        previous = data["exercises"].get(name, {})
        entry = {
            "lab": name.split(".", 1)[0],
            "status": str(feedback_record.get("status", "failed")),
            "points": float(feedback_record.get("points", 0) or 0),
            "max_points": float(feedback_record.get("max_points", 0) or 0),
            "message": str(feedback_record.get("message", ""))[:500],
            "time": time.time(),
            "attempts": int(previous.get("attempts", 0)) + 1,
            "ever_passed": bool(previous.get("ever_passed")) or feedback_record.get("status") == "passed",
        }
        data["exercises"][name] = entry
        _write_atomically(path, data)
    return entry


def _write_atomically(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=1, sort_keys=True))


def _in_kernel() -> bool:
    """True inside a Jupyter kernel, where a student runs checks."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def record(feedback: Any) -> Any:
    """Record a check's ``Feedback`` if running in a kernel; never raises; returns ``feedback``.

    ``check()`` calls this on every verdict. Progress is a convenience: whatever goes wrong
    here (a read-only home, a full disk, a lock held too long) must not break the check.
    """
    try:
        if os.environ.get("LABKIT_PROGRESS", "").strip().lower() in OFF_VALUES or not _in_kernel():
            return feedback
        store(feedback.record())
    except Exception as e:  # see the docstring: say so once, carry on
        global _warned
        if not _warned:
            _warned = True
            print(f"labkit: could not record progress ({type(e).__name__}: {e})", file=sys.stderr)
    return feedback
