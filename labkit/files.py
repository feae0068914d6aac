"""Files that readers must never see half-written: the grader's reports, the sidebar's progress."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomically(path: Path, text: str, *, unless_same: bool = False) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never half of one."""
    if unless_same:
        try:
            if path.read_text(encoding="utf-8") == text:
                return
        except OSError:
            pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # as an ordinary file would be, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
