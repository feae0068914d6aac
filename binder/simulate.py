#!/usr/bin/env python3
"""Build and use the course as Binder does, on this machine, without Docker:

1. a fresh virtual environment of the Python in ``runtime.txt`` with ``pip install -r binder/requirements.txt``;
2. a copy of the repository (what Binder clones), in which ``binder/postBuild`` runs (labkit as a wheel);
3. every student notebook run from ``labs/`` through ``binder/start``, as JupyterLab runs it there.

    python3 binder/simulate.py [--keep] [NOTEBOOK ...]

It prints the build time and, for each notebook, its wall time and errors; it exits non-zero on any failure.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = """
import sys, nbformat
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
               resources={"metadata": {"path": "."}}).execute()
errors = [f"cell {i}: {o.ename}: {o.evalue}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
          for o in c.outputs if o.output_type == "error"]
import labkit
print("labkit from", labkit.__file__)
print("\\n".join(errors) or "no errors")
sys.exit(1 if errors else 0)
"""


def python_of_runtime() -> str:
    version = (ROOT / "binder" / "runtime.txt").read_text().strip().removeprefix("python-")
    found = shutil.which(f"python{version}") or next(iter(sorted(glob.glob(
        f"{os.environ.get('PYENV_ROOT', Path.home() / '.pyenv')}/versions/{version}.*/bin/python{version}"))), None)
    if not found:
        sys.exit(f"binder/runtime.txt asks for Python {version}, which is not on this machine")
    return found


def step(title: str, command: list[str], **kwargs) -> float:
    print(f"== {title}", flush=True)
    started = time.monotonic()
    subprocess.run(command, check=True, **kwargs)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="student notebooks to run (default: every one in labs/)")
    parser.add_argument("--keep", action="store_true", help="keep the build folder and print its path")
    args = parser.parse_args()
    build = Path(tempfile.mkdtemp(prefix="labkit-binder-"))
    env_dir, repo = build / "env", build / "repo"
    try:
        seconds = step("fresh environment", [python_of_runtime(), "-m", "venv", str(env_dir)])
        path = f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABKIT_", "VIRTUAL_ENV", "PYTHONPATH"))}
        env.update(PATH=path, HOME=str(build / "home"))
        (build / "home").mkdir()
        seconds += step("pip install -r binder/requirements.txt",
                        ["pip", "install", "--quiet", "-r", str(ROOT / "binder" / "requirements.txt")], env=env)
        shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".venv*", ".git", "build", "*.egg-info",
                                                                  "__pycache__", "node_modules", "results"))
        seconds += step("binder/postBuild", ["bash", "binder/postBuild"], cwd=repo, env=env)
        print(f"build: {seconds:.0f} s", flush=True)
        everyone = sorted(p.name for p in (repo / "labs").glob("[0-9]*.ipynb"))
        notebooks = [Path(n).name for n in args.notebooks] or everyone
        failed = []
        for name in notebooks:
            started = time.monotonic()
            result = subprocess.run([str(repo / "binder" / "start"), "python", "-c", RUNNER, name],
                                    cwd=repo / "labs", env=env, capture_output=True, text=True)
            print(f"{name}: {time.monotonic() - started:.1f} s, {result.stdout.strip()}"
                  + (f"\n{result.stderr[-2000:]}" if result.returncode else ""), flush=True)
            if result.returncode or f"{env_dir}" not in result.stdout:
                failed.append(name)
        print(f"{len(notebooks) - len(failed)} passed, {len(failed)} failed", flush=True)
        return 1 if failed else 0
    finally:
        if args.keep:
            print(f"kept {build}")
        else:
            shutil.rmtree(build, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
