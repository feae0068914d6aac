"""Lab 09's live dashboard: an ipywidgets panel that redraws while a week replays.

    >>> board = Dashboard(week, "work/payloads.jsonl", cbpe=cbpe)                    # doctest: +SKIP
    >>> display(board.widget)
    >>> labkit.week.replay(router, "digits", week, on_chunk=board.update)

It reads the service's payload log (``labs/runtimes/guarded_service.py`` writes it) after each chunk of the
replay, and shows per version: request rate, latency percentiles (as the load generator measured them), error
rate, outlier and adversarial rates, the drift p-value, the accuracy CBPE estimates from the model's confidence
and, once labels have arrived (by the simulated hour the replay has reached), the accuracy they reveal.
"""

from __future__ import annotations

import numpy as np

from labkit import monitor
from labkit.week import HOURS, Week, read_log

COLOURS = {"1": "tab:blue", "2": "crimson", "3": "tab:green"}


def labelled_accuracy(records: list[dict], week: Week, by_hour: float, hours: int = HOURS, bin_hours: int = 6) -> dict:
    """Per version, the accuracy per ``bin_hours`` (one value per bin) of the answered requests whose labels have
    arrived by ``by_hour``."""
    arrived = week.labels(by_hour)
    labels = dict(zip(arrived["request_id"], arrived["label"], strict=True))
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    bins = -(-hours // bin_hours)
    for r in records:
        if r.get("status") != 200 or r["request_id"] not in labels or not 0 <= r["t"] < hours:
            continue
        right, seen = out.setdefault(r["version"], (np.zeros(bins), np.zeros(bins)))
        seen[int(r["t"] // bin_hours)] += 1
        right[int(r["t"] // bin_hours)] += r["predict"] == labels[r["request_id"]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {v: np.where(seen > 0, right / np.maximum(seen, 1), np.nan) for v, (right, seen) in out.items()}


class Dashboard:
    """See the module's documentation. ``every``: redraw the plots every that many chunks (numbers every one)."""

    def __init__(self, week: Week, log, *, cbpe: monitor.CBPE | None = None, every: int = 4, smooth: int = 3):
        import ipywidgets as widgets

        self.week, self.log, self.cbpe, self.every, self.smooth = week, log, cbpe, every, smooth
        self.latency: list[tuple[float, str, float, float]] = []  # (hour, version, p50 ms, p99 ms) per chunk
        self.chunks = 0
        self.now = 0.0
        self.numbers = widgets.HTML("waiting for the replay…")
        self.plots = widgets.Output()
        self.widget = widgets.VBox([self.numbers, self.plots])

    def update(self, chunk=None) -> None:
        if chunk is not None:
            self.now = chunk.end
            for version, result in chunk.results.items():
                self.latency.append((chunk.start + (chunk.end - chunk.start) / 2, version,
                                     result.p50 * 1000, result.p99 * 1000))
            self.chunks += 1
        records = read_log(self.log)
        self.numbers.value = self._numbers(records)
        if chunk is None or self.chunks % self.every == 0:
            with self.plots:
                from IPython.display import clear_output, display

                clear_output(wait=True)
                display(self.figure(records))

    def _numbers(self, records: list[dict]) -> str:
        recent = [r for r in records if self.now - 6 <= r["t"] < self.now]
        answered = [r for r in recent if r.get("status") == 200]
        share = (lambda key: sum(bool(r[key]) for r in answered) / len(answered)) if answered else (lambda key: 0)
        errors = sum(int(r.get("status", 200)) >= 500 for r in recent)
        drift = answered[-1]["drift_p"] if answered else float("nan")
        return (f"<b>simulated hour {self.now:.0f} of {HOURS}</b> (day {int(self.now // 24) + 1}) · last 6 h: "
                f"{len(recent)} requests, {errors} server errors, outliers {share('is_outlier'):.0%}, "
                f"adversarial {share('is_adversarial'):.0%}, drift p {drift:.2g} · {len(records)} logged")

    def figure(self, records: list[dict]):
        """The dashboard's plots as a matplotlib figure (closed: display it)."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 3, figsize=(12, 5.2), sharex=True)
        versions = sorted({r["version"] for r in records})
        accuracy = labelled_accuracy(records, self.week, self.now)
        k = self.smooth
        hours = np.arange(HOURS) + 0.5
        for version in versions:
            m = monitor.hourly(records, version=version, cbpe=self.cbpe)
            colour = COLOURS.get(version, "grey")
            used = m["requests"] > 0
            axes[0, 0].plot(hours[used], m["requests"][used], ".", ms=3, color=colour, label=f"v{version}")
            axes[0, 2].plot(hours, monitor.series(m, "error_rate", k), color=colour)
            axes[1, 0].plot(hours, monitor.series(m, "outlier_rate", k), color=colour)
            axes[1, 0].plot(hours, monitor.series(m, "adversarial_rate", k), color=colour, ls="--")
            axes[1, 1].semilogy(hours[used], np.maximum(m["drift_p"][used], 1e-12), color=colour)
            if self.cbpe is not None:
                axes[1, 2].plot(hours[used], m["estimated_accuracy"][used], ".", ms=3, color=colour, alpha=0.6)
            if version in accuracy:
                centres = (np.arange(len(accuracy[version])) + 0.5) * 6
                axes[1, 2].plot(centres, accuracy[version], "s", ms=4, mfc="none", color=colour)
        for hour, version, p50, p99 in self.latency:
            axes[0, 1].plot([hour], [p50], "o", ms=3, color=COLOURS.get(version, "grey"))
            axes[0, 1].plot([hour], [p99], "^", ms=3, color=COLOURS.get(version, "grey"))
        titles = [["requests per hour", "latency ms (o p50, ^ p99)", f"error rate ({k} h)"],
                  [f"outlier (—) and adversarial (--) rates ({k} h)", "drift p-value",
                   "accuracy: CBPE (. per h), labels (□ per 6 h)"]]
        for row in range(2):
            for col in range(3):
                ax = axes[row, col]
                ax.set_title(titles[row][col], fontsize=9)
                ax.set_xlim(0, HOURS)
                ax.axvline(self.now, color="grey", lw=0.8)
                for day in range(24, HOURS, 24):
                    ax.axvline(day, color="lightgrey", lw=0.5)
        axes[1, 1].axhline(0.001, color="grey", ls=":", lw=1)
        axes[1, 2].set_ylim(0, 1.02)
        if versions:
            axes[0, 0].legend(fontsize=8, loc="upper left")
        for ax in axes[1]:
            ax.set_xlabel("simulated hour")
        fig.tight_layout()
        plt.close(fig)
        return fig
