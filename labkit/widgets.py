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


def shifted_window(x_pool, size: int, feature: int, shift: float = 0.0, scale: float = 1.0, *,
                   x_ref=None, seed: int = 0) -> np.ndarray:
    """``size`` rows drawn from ``x_pool`` (seeded) with one feature changed, as a drifting sensor would.

    The feature is stretched by ``scale`` around its median and moved by ``shift`` standard deviations (of
    ``x_ref`` if given, else of the pool). ``shift=0, scale=1`` gives a window without drift.
    """
    pool = np.asarray(x_pool, dtype=float)
    if pool.ndim != 2 or not 0 <= feature < pool.shape[1]:
        raise ValueError(f"x_pool must be rows x features and feature an index below {pool.shape[-1]}")
    window = pool[np.random.default_rng(seed).integers(0, len(pool), int(size))].copy()
    spread = np.asarray(x_ref if x_ref is not None else pool, dtype=float)[:, feature].std()
    centre = np.median(window[:, feature])
    window[:, feature] = centre + scale * (window[:, feature] - centre) + shift * spread
    return window


def drift_explorer(detect, x_ref, x_pool, feature_names=None, *, feature: int = 0, window: int = 100,
                   seed: int = 0):
    """Sliders over the size of a shift in one feature, with the detector's p-values and verdict.

    ``detect(x)`` is a drift detector's ``predict`` (alibi-detect's shape: it returns
    ``{"data": {"is_drift", "p_val", "threshold"?, ...}}``), ``x_ref`` its reference data and ``x_pool`` rows
    without drift to draw windows from. Move the shift or the spread of a feature and watch its p-value fall
    below the threshold. Returns the widget; its ``.shift``, ``.scale``, ``.feature``, ``.window`` controls and
    ``.readout`` are exposed for tests and for linking to other widgets.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    x_ref = np.asarray(x_ref, dtype=float)
    names = list(feature_names) if feature_names is not None else [f"feature {i}" for i in range(x_ref.shape[1])]
    if len(names) != x_ref.shape[1]:
        raise ValueError(f"{len(names)} feature names for {x_ref.shape[1]} features")
    choose = widgets.Dropdown(options=[(name, i) for i, name in enumerate(names)], value=feature,
                              description="feature")
    shift = widgets.FloatSlider(value=0.0, min=-2, max=2, step=0.05, description="shift (sd)")
    scale = widgets.FloatSlider(value=1.0, min=0.25, max=3, step=0.05, description="spread ×")
    size = widgets.IntSlider(value=window, min=10, max=500, step=10, description="window")
    readout = widgets.HTML()
    plot = widgets.Output()

    def redraw(change=None):
        x = shifted_window(x_pool, size.value, choose.value, shift.value, scale.value, x_ref=x_ref, seed=seed)
        data = dict(detect(x)["data"])
        p_values = np.atleast_1d(np.asarray(data["p_val"], dtype=float))
        threshold = float(np.asarray(data.get("threshold", np.nan)).max())
        verdict = "drift" if int(np.asarray(data["is_drift"]).item()) else "no drift"
        colour = "#c62828" if verdict == "drift" else "#2e7d32"
        readout.value = (f"<b style='color:{colour}'>{verdict}</b> · p-value of {names[choose.value]!s}: "
                         f"{p_values[choose.value] if len(p_values) == len(names) else p_values[0]:.2g}, "
                         f"threshold {threshold:.2g}")
        with plot:
            plot.clear_output(wait=True)
            fig, (hist, bars) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [1, 2]})
            column = choose.value
            bins = np.histogram_bin_edges(np.concatenate([x_ref[:, column], x[:, column]]), 30)
            hist.hist(x_ref[:, column], bins=bins, density=True, alpha=0.6, label=f"reference ({len(x_ref)})")
            hist.hist(x[:, column], bins=bins, density=True, alpha=0.6, label=f"window ({len(x)})")
            hist.set(xlabel=names[column], yticks=[])
            hist.legend(fontsize="small")
            colours = ["#c62828" if p < threshold else "#90a4ae" for p in p_values]
            bars.bar(range(len(p_values)), np.maximum(p_values, 1e-300), color=colours)
            if np.isfinite(threshold):
                bars.axhline(threshold, color="black", linestyle="--", label="threshold")
                bars.legend(fontsize="small", loc="lower right")
            bars.set(yscale="log", ylim=(min(1e-6, p_values.min() / 2, threshold / 10), 1.5), ylabel="p-value",
                     xticks=range(len(p_values)), xlabel="feature")
            bars.tick_params(axis="x", labelsize=6)
            fig.tight_layout()
            plt.show()

    for control in (choose, shift, scale, size):
        control.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([choose, size]), widgets.HBox([shift, scale]), readout, plot])
    box.feature, box.shift, box.scale, box.window, box.readout = choose, shift, scale, size, readout
    return box


def attack_explorer(images, labels, attack, predict_proba, *, score=None, threshold: float | None = None,
                    epsilons=None):
    """A slider over an attack's budget ε: the attacked images, the classifier's answers and a detector's score.

    ``attack(images, labels, epsilon)`` returns the attacked images (rows of 64 pixels, 8x8), ``predict_proba``
    class probabilities, and ``score`` (optional) a detector's score per row, drawn against ``threshold``. The
    attack runs once per ε of ``epsilons`` (default 0 to 0.3 in steps of 0.02) when the widget is built, so the
    slider moves at once. Returns the widget; its ``.slider`` and ``.readout`` are exposed for tests.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if images.ndim != 2 or len(images) != len(labels) or len(images) == 0:
        raise ValueError("attack_explorer needs rows of pixels and one label per row")
    epsilons = np.round(np.arange(0, 0.301, 0.02) if epsilons is None else np.asarray(epsilons, dtype=float), 4)
    attacked = {float(e): np.asarray(attack(images.copy(), labels.copy(), float(e)), dtype=np.float32)
                for e in epsilons}
    side = int(round(np.sqrt(images.shape[1])))
    slider = widgets.SelectionSlider(options=[(f"{e:.2f}", float(e)) for e in epsilons], value=float(epsilons[0]),
                                     description="budget ε")
    slider.layout.width = "60%"
    readout = widgets.HTML()
    plot = widgets.Output()

    def redraw(change=None):
        rows = attacked[slider.value]
        proba = np.asarray(predict_proba(rows))
        predicted = proba.argmax(axis=1)
        scores = None if score is None else np.asarray(score(rows), dtype=float).ravel()
        text = f"ε = {slider.value:.2f}: <b>{int((predicted != labels).sum())} of {len(labels)}</b> images misread"
        if scores is not None and threshold is not None:
            text += f"; <b>{int((scores > threshold).sum())}</b> flagged by the detector"
        readout.value = text
        with plot:
            plot.clear_output(wait=True)
            n = len(images)
            fig, axes = plt.subplots(3 if scores is not None else 2, n, figsize=(1.3 * n, 4.6 if scores is not None
                                                                                    else 3.0), squeeze=False)
            for j in range(n):
                for i, (image, title) in enumerate([(images[j], f"true {labels[j]}"),
                                                    (rows[j], f"{predicted[j]} ({proba[j].max():.0%})")]):
                    ax = axes[i, j]
                    ax.imshow(image.reshape(side, side), cmap="gray_r", vmin=0, vmax=1)
                    ax.set_title(title, fontsize=8, color="#c62828" if i and predicted[j] != labels[j] else "black")
                    ax.set_xticks([]), ax.set_yticks([])
            if scores is not None:
                gs = axes[2, 0].get_gridspec()
                for ax in axes[2]:
                    ax.remove()
                bars = fig.add_subplot(gs[2, :])
                bars.bar(range(n), scores, color=["#c62828" if threshold is not None and s > threshold else "#90a4ae"
                                                  for s in scores])
                if threshold is not None:
                    bars.axhline(threshold, color="black", linestyle="--")
                bars.set(xticks=range(n), ylabel="score", xlim=(-0.5, n - 0.5))
            fig.tight_layout()
            plt.show()

    slider.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([slider, readout, plot])
    box.slider, box.readout = slider, readout
    return box


def waterfall_explorer(explanation, labels=None, *, max_display: int = 10, what: str = "model output"):
    """A slider over the rows of a ``shap.Explanation``, with the waterfall plot of the row it picks.

    ``labels`` (one string per row, optional) are shown beside the row number, for example the true class.
    The readout checks additivity for the row: base value plus its SHAP values equals the model's output.
    Returns the widget; its ``.row`` slider and ``.readout`` are exposed for tests and for linking.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    import shap

    n = len(explanation)
    if n == 0:
        raise ValueError("waterfall_explorer needs an explanation of at least one row")
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} rows")
    row = widgets.IntSlider(value=0, min=0, max=n - 1, description="row")
    row.layout.width = "60%"
    readout = widgets.HTML()
    plot = widgets.Output()

    def redraw(change=None):
        one = explanation[row.value]
        base, total = float(np.ravel(one.base_values)[0]), float(np.sum(one.values))
        label = f" ({labels[row.value]})" if labels is not None else ""
        readout.value = (f"row {row.value}{label}: base value {base:.3f} + SHAP values {total:+.3f} = "
                         f"<b>{base + total:.3f}</b>, the {what}")
        with plot:
            plot.clear_output(wait=True)
            shap.plots.waterfall(one, max_display=max_display, show=False)
            plt.gcf().set_size_inches(8, 0.35 * max_display + 1.5)
            plt.show()

    row.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([row, readout, plot])
    box.row, box.readout = row, readout
    return box
