"""Where the course is: the one place that finds its ``datasets/``, ``labs/runtimes/`` and ``labs/solutions/``.

labkit is a package; the course (data, runtimes, notebooks) is a folder beside it that a wheel does not carry.
An editable install finds it next to ``labkit/``, but Binder, a JupyterHub image or an instructor who
``pip install``-ed labkit does not, so the folder is found in this order:

1. ``LABKIT_COURSE``, when set (``binder/start`` sets it);
2. the nearest folder at or above the working directory that holds the course's marker file;
3. the source tree of an editable install.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

ENV = "LABKIT_COURSE"
MARKER = Path("datasets") / "SHA256SUMS"


class CourseNotFound(RuntimeError):
    """No folder with the course's files was found."""


def _is_course(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _candidates(start: Path) -> list[Path]:
    return [start, *start.parents]


@functools.lru_cache(maxsize=8)
def _find(setting: str | None, start: Path) -> Path:
    if setting:
        folder = Path(setting).expanduser().resolve()
        if _is_course(folder):
            return folder
        raise CourseNotFound(f"{ENV}={setting} does not hold the course ({folder / MARKER} is missing). "
                             f"Point {ENV} at the folder you cloned the course into.")
    searched = _candidates(start)
    source_tree = Path(__file__).resolve().parent.parent
    for folder in [*searched, source_tree]:
        if _is_course(folder):
            return folder
    raise CourseNotFound(
        f"labkit cannot find the course's files ({MARKER}) in {start} or any folder above it, nor beside "
        f"labkit ({source_tree}). Run the notebook from inside the course's folder, or set {ENV} to the "
        "folder you cloned the course into (the repository, not only the labkit wheel)."
    )


def root() -> Path:
    """The course's folder (the repository): from ``LABKIT_COURSE``, the working directory or labkit's source."""
    return _find(os.environ.get(ENV) or None, Path.cwd().resolve())


def datasets() -> Path:
    """The course's ``datasets/`` folder."""
    return root() / "datasets"


def runtimes() -> Path:
    """The MLServer runtime code that the labs serve (``labs/runtimes/``)."""
    return root() / "labs" / "runtimes"


def solutions() -> Path:
    """The solution notebooks (``labs/solutions/``), the source of the student notebooks."""
    return root() / "labs" / "solutions"
