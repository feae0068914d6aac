"""The ``labkit`` command: ``doctor``, ``assign``, ``grade`` and ``serve``.

``doctor()`` is also callable from a notebook, where it renders as a table.
"""

from __future__ import annotations

import argparse
import html
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.specifiers import SpecifierSet

KEY_PACKAGES = ["mlserver", "mlserver-sklearn", "uvloop", "alibi-detect", "tensorflow", "tf-keras",
                "numpy", "scikit-learn", "shap", "tritonclient", "jupyterlab", "ipywidgets"]
MIN_MEMORY_GB = 1.5


@dataclass
class Finding:
    name: str
    status: str  # ok, warn or fail
    detail: str
    fix: str = ""


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status != "fail" for f in self.findings)

    def add(self, name, status, detail, fix=""):
        self.findings.append(Finding(name, status, detail, fix))

    def __str__(self) -> str:
        mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        width = max(len(f.name) for f in self.findings)
        lines = []
        for f in self.findings:
            lines.append(f"{mark[f.status]}  {f.name:<{width}}  {f.detail}")
            if f.fix and f.status != "ok":
                lines.append(f"{'':6}{'':<{width}}  fix: {f.fix}")
        lines.append("All good: you are ready for the labs." if self.ok else "Some checks failed: see the fixes above.")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = {"ok": "#2e7d32", "warn": "#ef6c00", "fail": "#c62828"}
        rows = "".join(
            f"<tr><td style='color:{colour[f.status]};font-weight:bold'>{f.status}</td>"
            f"<td>{html.escape(f.name)}</td><td>{html.escape(f.detail)}</td>"
            f"<td>{html.escape(f.fix) if f.status != 'ok' else ''}</td></tr>"
            for f in self.findings
        )
        summary = "All good: you are ready for the labs." if self.ok else "Some checks failed: see the fixes."
        return (f"<table><tr><th></th><th>check</th><th>found</th><th>fix</th></tr>{rows}</table>"
                f"<p><b>{summary}</b></p>")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def doctor(start_server: bool = True) -> Report:
    """Check this machine for the labs; every problem comes with its fix."""
    import psutil

    from labkit.serving import free_port

    report = Report()
    supported = SpecifierSet(metadata.metadata("labkit")["Requires-Python"])  # pyproject's requires-python
    if platform.python_version() in supported:
        report.add("python", "ok", f"{platform.python_version()} ({sys.executable})")
    else:
        names = [f"3.{minor}" for minor in range(30) if f"3.{minor}.0" in supported]
        report.add("python", "fail", f"{platform.python_version()} is not supported (needs {supported})",
                   f"install Python {', '.join(names[:-1])} or {names[-1]} (macOS: `brew install python@{names[-1]}`) "
                   f"and run the README's commands with it: `python{names[-1]} tasks.py lab`")

    missing = [name for name in KEY_PACKAGES if _version(name) is None]
    versions = ", ".join(f"{name} {_version(name)}" for name in KEY_PACKAGES if name not in missing)
    if missing:
        report.add("packages", "fail", f"missing: {', '.join(missing)}; found {versions}",
                   "run `python3 tasks.py lab` (or `pip install -c constraints.txt -e .`) from the course folder")
    else:
        report.add("packages", "ok", versions)
    from labkit import course

    try:
        report.add("course", "ok", str(course.root()))
    except course.CourseNotFound as error:
        report.add("course", "fail", str(error), f"cd into the course's folder, or set {course.ENV}")
    uvloop = _version("uvloop")
    if uvloop and tuple(int(p) for p in uvloop.split(".")[:2]) >= (0, 22):
        report.add("uvloop", "fail", f"uvloop {uvloop}: MLServer 1.7 workers die with it",
                   "pip install 'uvloop<0.22' (constraints.txt pins it)")

    cores = os.cpu_count() or 1
    report.add("cpu", "ok" if cores >= 2 else "warn", f"{cores} cores",
               "the labs are timed on 2 cores; with 1 they take about twice as long")
    free_gb = psutil.virtual_memory().available / 2**30
    report.add("memory", "ok" if free_gb >= MIN_MEMORY_GB else "warn", f"{free_gb:.1f} GB available",
               f"a lab needs about {MIN_MEMORY_GB} GB: close other programs or stop servers you do not use")

    try:
        free_port()
        report.add("ports", "ok", "can listen on 127.0.0.1")
    except OSError as e:
        report.add("ports", "fail", f"cannot listen on 127.0.0.1: {e}",
                   "a firewall or sandbox blocks local servers; ask your administrator")

    if start_server and report.ok:
        report.findings.append(_try_mlserver())
    if os.environ.get("JUPYTERHUB_SERVICE_PREFIX"):
        report.add("jupyterhub", "ok", f"running under JupyterHub/Binder at {os.environ['JUPYTERHUB_SERVICE_PREFIX']}")
    return report


def _try_mlserver() -> Finding:
    from labkit.serving import Server, ServerError

    with tempfile.TemporaryDirectory(prefix="labkit-doctor-") as empty:
        start = time.monotonic()
        try:
            with Server(empty, settings={"parallel_workers": 0}, timeout=60):
                took = time.monotonic() - start
        except ServerError as e:
            return Finding("mlserver", "fail", f"MLServer did not start: {str(e)[:300]}",
                           "read the log lines in the message; `python3 tasks.py lab` reinstalls the pinned versions")
    return Finding("mlserver", "ok", f"started and stopped on 127.0.0.1 ({took:.1f} s to ready)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labkit", description="Last Mile Lab tools.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("doctor", help="check this machine for the labs")
    p.add_argument("--no-server", action="store_true", help="skip starting a test MLServer")

    p = commands.add_parser("assign", help="generate student notebooks from labs/solutions")
    p.add_argument("--source", default="labs/solutions", help="folder of solution notebooks")
    p.add_argument("--dest", default="labs", help="folder for the student notebooks")
    p.add_argument("--check", action="store_true", help="write nothing; fail if anything is out of sync")

    p = commands.add_parser("grade", help="grade submitted notebooks into grades.csv and feedback")
    p.add_argument("submissions", nargs="*", help="notebooks, or folders of them")
    p.add_argument("--lab", help="lab number, e.g. 01")
    p.add_argument("--out", default="grades", help="output folder (default: grades)")
    p.add_argument("--shard", default=None, metavar="K/N", help="grade only the K-th of N disjoint parts")
    p.add_argument("--merge", nargs="+", default=None, metavar="OUT_K",
                   help="combine the output folders of the shards into --out (nothing is graded)")
    p.add_argument("--key", default=None, help="the grading key file (default OUT/.grading-key); shards share one")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run student code without a sandbox (only for submissions you trust)")
    p.add_argument("--max-processes", type=int, default=512, help="processes and threads per submission")
    p.add_argument("--disk-mb", type=int, default=1024, help="work-folder size per submission (default 1024)")
    p.add_argument("--workers", type=int, default=1, help="notebooks graded at once")
    p.add_argument("--timeout-cell", type=float, default=60, help="seconds per cell (default 60)")
    p.add_argument("--timeout-notebook", type=float, default=300, help="seconds for all cells (default 300)")
    p.add_argument("--memory-mb", type=int, default=4096, help="address-space cap per kernel (default 4096)")
    p.add_argument("--solutions", default=None, help="folder of solution notebooks (default labs/solutions)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = commands.add_parser("serve", help="serve a model repository until Ctrl-C")
    p.add_argument("repository", help="folder with model-settings.json files")
    p.add_argument("--workers", type=int, default=None, help="MLServer parallel_workers")
    p.add_argument("--http-port", type=int, default=None)
    p.add_argument("--grpc-port", type=int, default=None)

    args = parser.parse_args(argv)
    try:
        return {"doctor": _doctor, "assign": _assign, "grade": _grade, "serve": _serve}[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one line for the user, not a traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"labkit {args.command}: {first}", file=sys.stderr)
        return 2


def _doctor(args) -> int:
    report = doctor(start_server=not args.no_server)
    print(report)
    return 0 if report.ok else 1


def _assign(args) -> int:
    from labkit.assign import assign

    result = assign(args.source, args.dest, check=args.check)
    for path in result.written:
        print(f"wrote {path}")
    for path in result.out_of_sync:
        print(f"out of sync: {path} (run `labkit assign`)")
    for path in result.stale:
        print(f"no solution for {path}: delete it or add its solution")
    if args.check:
        print(f"{len(result.unchanged)} student notebooks in sync, {len(result.out_of_sync)} out of sync")
    return 1 if (args.check and (result.out_of_sync or result.stale)) else 0


def _grade(args) -> int:
    from labkit.grading import Options, grade, merge, parse_shard

    if args.merge:
        results = merge(args.merge, args.out, args.solutions)
        print(f"merged {len(results)} submissions from {len(args.merge)} parts into {Path(args.out) / 'grades.csv'}")
        return 0
    if not args.submissions or not args.lab:
        raise ValueError("give the submissions and --lab (or --merge OUT_1 OUT_2 ... --out OUT)")
    options = Options(timeout_cell=args.timeout_cell, timeout_notebook=args.timeout_notebook,
                      memory_mb=args.memory_mb, sandbox=not args.no_sandbox, max_processes=args.max_processes,
                      disk_mb=args.disk_mb)
    shard = parse_shard(args.shard) if args.shard else None
    results = grade(args.submissions, args.lab, args.out, workers=args.workers, options=options,
                    solutions=args.solutions, progress=not args.quiet, shard=shard, key_file=args.key)
    statuses = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    print(f"graded {len(results)} submissions ({counts}); wrote {Path(args.out) / 'grades.csv'}, feedback/, "
          "summary.html, anomalies.log")
    return 0


def _serve(args) -> int:
    from labkit.serving import Server, ServerError

    settings = {} if args.workers is None else {"parallel_workers": args.workers}
    server = Server(Path(args.repository), settings=settings, http_port=args.http_port, grpc_port=args.grpc_port)
    try:
        server.start()
    except ServerError as e:
        print(f"labkit serve: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"serving {', '.join(server.models) or 'no models'}: REST {server.url}  gRPC {server.grpc_target}  "
          f"metrics {server.metrics_url}  (Ctrl-C stops)", flush=True)
    try:
        while server.running:
            time.sleep(0.5)
        print("labkit serve: MLServer stopped by itself; last log lines:\n" + server.logs(), file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
