import json

import joblib
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from labkit.data import load_breast_cancer


@pytest.fixture(scope="session")
def dataset():
    return load_breast_cancer()


@pytest.fixture(scope="session")
def classifier(dataset):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(dataset.X.values, dataset.y)


@pytest.fixture(scope="session")
def sklearn_repo(tmp_path_factory, classifier):
    """A model repository with one scikit-learn model, ``cancer``."""
    root = tmp_path_factory.mktemp("repo")
    (root / "cancer").mkdir()
    joblib.dump(classifier, root / "cancer" / "model.joblib")
    (root / "cancer" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "cancer",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
        )
    )
    return root


def wait_gone(pids, seconds=5.0):
    """Wait up to ``seconds`` for ``pids`` to end; the ones still running."""
    import time

    deadline = time.monotonic() + seconds
    while pids_alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids_alive(pids)


def pids_alive(pids):
    """The pids among ``pids`` that still run (zombies count as gone)."""
    import psutil

    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive
