"""Interactive widgets for the labs (ipywidgets)."""

from __future__ import annotations

import numpy as np


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
