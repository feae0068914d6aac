"""Interactive widgets for the labs (ipywidgets)."""

from __future__ import annotations

import numpy as np


def threshold_rates(threshold: float, clean_scores, outlier_scores) -> dict[str, float]:
    """What a threshold does: a row is flagged when its score is above it.

    ``fpr``: share of clean rows flagged; ``recall``: share of outliers flagged; ``precision``: share of
    flagged rows that are outliers (``nan`` when nothing is flagged).
    """
    clean = np.asarray(clean_scores, dtype=float).ravel()
    outliers = np.asarray(outlier_scores, dtype=float).ravel()
    false_alarms, caught = int((clean > threshold).sum()), int((outliers > threshold).sum())
    flagged = false_alarms + caught
    return {
        "fpr": false_alarms / len(clean) if len(clean) else float("nan"),
        "recall": caught / len(outliers) if len(outliers) else float("nan"),
        "precision": caught / flagged if flagged else float("nan"),
    }


def threshold_explorer(clean_scores, outlier_scores, threshold: float | None = None, *, log: bool = True,
                       title: str = "outlier scores"):
    """A slider over the threshold, with both score histograms, the ROC curve and the rates it gives.

    Move the slider and watch the false positive rate and the recall change together. Returns the widget;
    its ``.slider`` and ``.readout`` are exposed for tests and for linking to other widgets.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    clean = np.asarray(clean_scores, dtype=float).ravel()
    outliers = np.asarray(outlier_scores, dtype=float).ravel()
    if len(clean) == 0 or len(outliers) == 0:
        raise ValueError("threshold_explorer needs at least one clean score and one outlier score")
    everything = np.concatenate([clean, outliers])
    low, high = float(everything.min()), float(everything.max())
    if high <= low:  # all scores equal: give the slider some room
        low, high = low - 0.5, high + 0.5
    positive = log and low > 0
    start = float(np.quantile(clean, 0.95)) if threshold is None else float(threshold)
    if positive:  # scores spanning decades are easier to move through on a log scale
        slider = widgets.FloatLogSlider(value=start, base=10, min=np.log10(low), max=np.log10(high),
                                        step=(np.log10(high) - np.log10(low)) / 200, description="threshold")
    else:
        slider = widgets.FloatSlider(value=start, min=low, max=high, step=(high - low) / 200,
                                     description="threshold")
    slider.layout.width = "60%"
    readout = widgets.HTML()
    plot = widgets.Output()
    # the ROC curve does not depend on the threshold: compute it once
    roc_fpr, roc_recall, _ = roc_curve(np.r_[np.zeros(len(clean)), np.ones(len(outliers))], everything)

    def redraw(change=None):
        t = slider.value
        rates = threshold_rates(t, clean, outliers)
        readout.value = (f"flagged: <b>{rates['fpr']:.1%}</b> of clean rows (false positive rate), "
                         f"<b>{rates['recall']:.1%}</b> of outliers (recall); precision "
                         f"{rates['precision']:.1%}")
        with plot:
            plot.clear_output(wait=True)
            fig, (hist, curve) = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [2, 1]})
            bins = np.geomspace(low, high, 40) if positive else np.linspace(low, high, 40)
            hist.hist(clean, bins=bins, alpha=0.6, label=f"clean ({len(clean)})")
            hist.hist(outliers, bins=bins, alpha=0.6, label=f"outliers ({len(outliers)})")
            hist.axvline(t, color="black", linestyle="--", label="threshold")
            if positive:
                hist.set_xscale("log")
            hist.set(xlabel=title, ylabel="rows")
            hist.legend(fontsize="small")
            curve.plot(roc_fpr, roc_recall, color="grey")
            curve.plot([rates["fpr"]], [rates["recall"]], "o", color="black")
            curve.set(xlabel="false positive rate", ylabel="recall", title="ROC curve", xlim=(-0.02, 1.02),
                      ylim=(-0.02, 1.02))
            fig.tight_layout()
            plt.show()

    slider.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([slider, readout, plot])
    box.slider, box.readout = slider, readout
    return box
