#!/usr/bin/env python3
"""Rebuild the prebuilt "Last Mile Lab" JupyterLab extension into labkit/jupyter/labextension.

Run with the course's environment after changing anything in this folder, then commit the
source and the built assets together:

    .venv/bin/python extension/build.py

Needs Node.js and npm (students do not: they get the built assets with labkit). It builds
against the installed JupyterLab's own core package list, so the shared packages match the
pinned JupyterLab exactly, and it records a hash of the sources next to the assets, which
tests/test_jupyter_extension.py compares to catch assets that were not rebuilt.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUT = HERE.parent / "labkit" / "jupyter" / "labextension"
SOURCES = ["package.json", "package-lock.json", "tsconfig.json", "src", "style"]


def source_hash() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        path = HERE / name
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(file.relative_to(HERE).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def main() -> int:
    import jupyterlab

    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    core = Path(jupyterlab.__file__).parent / "staging" / "package.json"
    steps = [
        ["npm", "ci", "--no-audit", "--no-fund"],
        [str(HERE / "node_modules" / ".bin" / "tsc")],
        [str(bin_dir / "jupyter-builder"), "build", f"--core-package-file={core}", "."],
    ]
    for step in steps:
        if subprocess.call(step, cwd=HERE, env=env) != 0:
            print(f"build.py: {' '.join(step)} failed", file=sys.stderr)
            return 1
    (OUTPUT / "source.sha256").write_text(source_hash() + "\n")
    print(f"Built {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
