"""The reports: grades.csv, feedback/<student>.{json,html}, summary.{json,html,png} and anomalies.log."""

from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from labkit.files import write_atomically as _atomic
from labkit.grading.lab import STATUSES, Lab, Result

_LABELS = {"passed": "passed", "failed": "not yet", "not_attempted": "not attempted", "error": "error"}
_COLOURS = {"passed": "#2e7d32", "failed": "#c62828", "not_attempted": "#757575", "error": "#ef6c00"}


def feedback_html(result: Result) -> str:
    """A student's feedback page: which checks passed, and what each expects (never the answer itself)."""
    rows = "".join(
        f"<tr><td>{html.escape(r.get('title') or r['name'])}<br><code>{html.escape(r['name'])}</code></td>"
        f"<td style='color:{_COLOURS.get(r['status'], '#000')};font-weight:bold'>{_LABELS.get(r['status'], '')}</td>"
        f"<td>{r['points']:g}/{r['max_points']:g}</td><td style='white-space:pre-wrap'>{html.escape(r['message'])}"
        + (f"<br><i>Hint: {html.escape(r['hint'])}</i>" if r.get("hint") and not r["passed"] else "")
        + "</td></tr>"
        for r in result.exercises)
    notes = "".join(f"<li>{html.escape(a)}</li>" for a in result.anomalies)
    return (f"<h2>{html.escape(result.student)}: {result.score:g}/{result.max_score:g}</h2>"
            f"<p>Status: <b>{result.status}</b></p>"
            "<table border=1 cellpadding=4 style='border-collapse:collapse'>"
            f"<tr><th>exercise</th><th>result</th><th>points</th><th>feedback</th></tr>{rows}</table>"
            + (f"<p>What the grader noticed:</p><ul>{notes}</ul>" if notes else ""))


Result._repr_html_ = feedback_html  # check_all() shows the result in the notebook


def write_reports(out: Path | str, lab: Lab, results: list[Result]) -> None:
    """grades.csv, feedback/<student>.{json,html}, summary.{json,html,png}, anomalies.log; same input, same files."""
    out = Path(out)
    results = sorted(results, key=lambda r: r.student)
    names = [e.name for e in lab.exercises]
    write_rows(out, lab, results, prune=True)
    summary = _summary(lab, results)
    _atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    _plot(out / "summary.png", lab, results, summary)
    rates = "".join(f"<tr><td><code>{html.escape(n)}</code></td><td>{summary['pass_rate'][n]:.0%}</td></tr>"
                    for n in names)
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items())
    _atomic(out / "summary.html",
        f"<!doctype html><meta charset=utf-8><title>Lab {lab.number} grades</title>"
        f"<h1>Lab {lab.number}: {summary['count']} submissions</h1>"
        f"<p>Mean {summary['mean']:.2f}, median {summary['median']:g} of {summary['max']:g} points. {statuses}.</p>"
        f"<img src='summary.png' alt='score distribution and pass rates'>"
        f"<table border=1 cellpadding=4><tr><th>exercise</th><th>passed by</th></tr>{rates}</table>\n")


def write_rows(out: Path, lab: Lab, results: list[Result], *, prune: bool = False) -> None:
    """grades.csv, anomalies.log and each student's feedback, every file replaced atomically: called after each
    graded submission, so that a crash, a kill or Ctrl-C keeps every row graded so far. ``prune`` removes the
    feedback of students who are not in ``results`` (from an earlier run with other submissions)."""
    results = sorted(results, key=lambda r: r.student)
    names = [e.name for e in lab.exercises]
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["student", "status", *names, "total", "max", "file"])
    for r in results:
        points = {e["name"]: e["points"] for e in r.exercises}
        writer.writerow([r.student, r.status, *(f"{points.get(n, 0):g}" for n in names), f"{r.score:g}",
                         f"{r.max_score:g}", r.file])
    folder = out / "feedback"
    folder.mkdir(parents=True, exist_ok=True)
    keep = set()
    for r in results:
        for suffix, text in ((".json", json.dumps(r.record(), indent=1, sort_keys=True) + "\n"),
                             (".html", f"<!doctype html><meta charset=utf-8><title>{html.escape(r.student)}</title>"
                                       f"{feedback_html(r)}\n")):
            _atomic(folder / f"{r.student}{suffix}", text, unless_same=True)
            keep.add(f"{r.student}{suffix}")
    if prune:
        for stale in folder.iterdir():
            if stale.name not in keep and stale.suffix in (".json", ".html"):
                stale.unlink()
    _atomic(out / "anomalies.log", "".join(f"{r.student}\t{r.status}\t{a}\n" for r in results for a in r.anomalies))
    _atomic(out / "grades.csv", rows.getvalue())  # last: a row in it has its feedback already


def read_results(out: Path | str) -> dict[str, Result]:
    """The rows an earlier run wrote to ``out`` (from feedback/<student>.json), by student."""
    results = {}
    for path in sorted(Path(out, "feedback").glob("*.json")):
        try:
            record = json.loads(path.read_text())
            result = Result(**record)
        except (OSError, ValueError, TypeError):
            continue  # not ours, or from an older labkit: graded again
        if f"{result.student}.json" == path.name:
            results[result.student] = result
    return results


def _summary(lab: Lab, results: list[Result]) -> dict:
    import numpy as np

    scores = [r.score for r in results]
    count = max(1, len(results))
    return {
        "lab": lab.number, "count": len(results), "max": lab.max_score,
        "mean": float(np.mean(scores)) if scores else 0.0, "median": float(np.median(scores)) if scores else 0.0,
        "statuses": {s: sum(r.status == s for r in results) for s in STATUSES if any(r.status == s for r in results)},
        "pass_rate": {e.name: sum(any(x["name"] == e.name and x["passed"] for x in r.exercises) for r in results)
                      / count for e in lab.exercises},
    }


def _plot(path: Path, lab: Lab, results: list[Result], summary: dict) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's, say) stays as it is
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(9, 3.2))
    left, right = fig.subplots(1, 2)
    top = max(lab.max_score, 1)
    left.hist([r.score for r in results], bins=[x - 0.5 for x in range(int(top) + 2)], color="#1565c0")
    left.set(xlabel="score", ylabel="students", title="Score distribution")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    names = list(summary["pass_rate"])
    right.barh(names, [summary["pass_rate"][n] for n in names], color="#2e7d32")
    right.set(xlim=(0, 1), xlabel="share of students who passed", title="Pass rate per exercise")
    right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
