"""Which labs exist and which exercises each has, for the sidebar.

Labs are the ``NN_topic.ipynb`` notebooks in the labs folder, so a new lab shows up by
itself; its exercises are the checks registered for ``NN`` (``labkit.checks.names``).
Check modules import MLServer and may import more, so the catalogue of exercises is
built in a short-lived subprocess (``python -m labkit.jupyter.catalog NN ...``) and never
loads any of that into the Jupyter server.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

LAB_FILE = re.compile(r"^(\d\d)_[\w-]+\.ipynb$")


def labs_folder(root: Path) -> Path | None:
    """The folder with the student notebooks: the root itself (``tasks.py lab``) or ``root/labs`` (Binder)."""
    for folder in (root, root / "labs"):
        if folder.is_dir() and any(LAB_FILE.match(p.name) for p in folder.iterdir()):
            return folder
    return None


def discover_labs(folder: Path) -> list[dict]:
    """The labs in ``folder`` in order: number, file name and the title of the notebook's first heading."""
    labs = []
    for path in sorted(folder.iterdir()):
        match = LAB_FILE.match(path.name)
        if match and path.is_file():
            labs.append({"lab": match.group(1), "file": path.name, "title": notebook_title(path)})
    return labs


def notebook_title(path: Path) -> str:
    """The text of the first ``#`` heading in the notebook's markdown, else the file's stem."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError, AttributeError):
        cells = []
    for cell in cells:
        if isinstance(cell, dict) and cell.get("cell_type") == "markdown":
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else str(source)
            for line in source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem.replace("_", " ")


def exercises(labs: list[str]) -> dict[str, list[dict]]:
    """``{lab: [{name, title, points}, ...]}`` from the check registry (run in the subprocess)."""
    from labkit.checks import REGISTRY, names

    catalogue = {}
    for lab in labs:
        try:
            catalogue[lab] = [
                {"name": n, "title": REGISTRY[n].title, "points": REGISTRY[n].points} for n in names(lab)
            ]
        except Exception as e:  # a broken check module must not hide the other labs
            catalogue[lab] = {"error": f"{type(e).__name__}: {e}"}
    return catalogue


if __name__ == "__main__":
    json.dump(exercises(sys.argv[1:]), sys.stdout)
