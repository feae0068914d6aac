"""Notebook budgets: run each solution notebook in a fresh kernel, as a student would.

For every notebook: wall time, the slowest cell, the slowest check cell (a check
should answer within a second or two) and the peak memory of the kernel plus
every process it started (MLServer supervisors, servers and workers), sampled
every 0.1 s as the sum of proportional set sizes (PSS: shared pages split between
their users), compared with the course's budgets.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
BUDGET_NOTEBOOK_S = 90
BUDGET_CELL_S = 30
BUDGET_MEMORY_MB = 1536


class PeakMemory(threading.Thread):
    """Samples the PSS of a process tree until stopped; keeps the peak in MB."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak_mb = pid, interval, 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            total = 0
            try:
                root = psutil.Process(self.pid)
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        total += proc.memory_full_info().pss
            except psutil.NoSuchProcess:
                return
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self._done.wait(self.interval)

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak_mb


def cell_seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def run_notebook(path: Path) -> dict:
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="labkit-bench-") as work:
        client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": work}})
        start = time.monotonic()
        # The instructor's own progress (the sidebar's) must not record the solutions' checks as passed.
        with client.setup_kernel(env=dict(os.environ, LABKIT_PROGRESS="off")):
            sampler = PeakMemory(client.km.provisioner.process.pid)
            sampler.start()
            try:
                for index, cell in enumerate(nb.cells):
                    client.execute_cell(cell, index)
            finally:
                peak = sampler.stop()
        wall = time.monotonic() - start
    cells = [(cell_seconds(c), i) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    slowest, slowest_index = max(cells)
    check_cells = [seconds for seconds, i in cells if nb.cells[i].source.lstrip().startswith("check(")]
    return {
        "notebook": str(path.relative_to(ROOT)),
        "wall_s": round(wall, 1),
        "slowest_cell_s": round(slowest, 1),
        "slowest_cell": slowest_index,
        "peak_memory_mb": round(peak),
        "slowest_check_s": round(max(check_cells, default=0.0), 2),
        "over_budget": [
            what
            for what, over in [
                ("time", wall > BUDGET_NOTEBOOK_S),
                ("cell", slowest > BUDGET_CELL_S),
                ("memory", peak > BUDGET_MEMORY_MB),
            ]
            if over
        ],
    }


def measure(notebooks: list[Path]) -> list[dict]:
    rows = []
    print(f"{'notebook':40} {'wall s':>7} {'slowest cell s':>15} {'peak MB':>8} {'check s':>8}  verdict")
    for path in notebooks:
        row = run_notebook(path.resolve())
        rows.append(row)
        verdict = "over: " + ", ".join(row["over_budget"]) if row["over_budget"] else "within budget"
        print(f"{row['notebook']:40} {row['wall_s']:7.1f} {row['slowest_cell_s']:9.1f} (#{row['slowest_cell']:<2}) "
              f"{row['peak_memory_mb']:8d} {row['slowest_check_s']:8.2f}  {verdict}", flush=True)
    print(f"budgets: {BUDGET_NOTEBOOK_S} s a notebook, {BUDGET_CELL_S} s a cell, {BUDGET_MEMORY_MB} MB")
    return rows
