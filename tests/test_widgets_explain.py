"""labkit.widgets.waterfall_explorer."""

import matplotlib
import pytest
import shap
from sklearn.ensemble import GradientBoostingClassifier

from labkit.widgets import waterfall_explorer

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def explanation(dataset):
    X, y = dataset.X.values[:200], dataset.y.values[:200]
    model = GradientBoostingClassifier(n_estimators=10, max_depth=2, random_state=0).fit(X, y)
    explained = shap.TreeExplainer(model)(X[:5])
    explained.feature_names = list(dataset.X.columns)
    return explained, model.decision_function(X[:5])


def test_readout_adds_up_and_follows_the_slider(explanation):
    explained, output = explanation
    widget = waterfall_explorer(explained, labels=list("abcde"), what="log-odds")
    assert "row 0 (a)" in widget.readout.value and f"{output[0]:.3f}</b>" in widget.readout.value
    widget.row.value = 3
    assert "row 3 (d)" in widget.readout.value and f"{output[3]:.3f}</b>" in widget.readout.value
    assert widget.row.max == 4


def test_bad_arguments_are_refused(explanation):
    explained, _ = explanation
    with pytest.raises(ValueError, match="2 labels for 5 rows"):
        waterfall_explorer(explained, labels=["a", "b"])
    with pytest.raises(ValueError, match="at least one row"):
        waterfall_explorer(explained[:0])
