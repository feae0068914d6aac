"""labs/runtimes/drift_detector.py: a saved alibi-detect detector served by MLServer."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from mlserver import types

from labkit.client import Client, InferenceServerError, decode_outputs
from labkit.data import drift_scenario
from labkit.serving import Server

RUNTIME = Path(__file__).resolve().parent.parent / "labs" / "runtimes" / "drift_detector.py"


@pytest.fixture(scope="module")
def reference():
    return drift_scenario("none", 300, seed=0).X


@pytest.fixture(scope="module")
def served(tmp_path_factory, reference):
    """A server with a KSDrift detector as model ``drift``, and the detector itself."""
    from alibi_detect.cd import KSDrift
    from alibi_detect.saving import save_detector

    repo = tmp_path_factory.mktemp("repo")
    (repo / "drift").mkdir()
    shutil.copy(RUNTIME, repo / "drift")
    detector = KSDrift(reference, p_val=0.05)
    save_detector(detector, repo / "drift" / "detector")
    (repo / "drift" / "model-settings.json").write_text(json.dumps({
        "name": "drift", "implementation": "drift_detector.DriftDetector", "parameters": {"uri": "./detector"}}))
    with Server(repo, settings={"parallel_workers": 0}) as server, Client(server, "rest") as client:
        yield server, client, detector


@pytest.mark.parametrize("kind", ["none", "instrument", "population"])
def test_verdict_p_values_and_distances_equal_the_detectors(served, kind):
    _, client, detector = served
    window = drift_scenario(kind, 100, seed=9).X
    outputs = decode_outputs(client.infer("drift", window))
    expected = detector.predict(window, return_p_val=True, return_distance=True)["data"]
    assert outputs["is_drift"].dtype == bool and outputs["is_drift"].size == 1
    assert bool(outputs["is_drift"].ravel()[0]) == bool(expected["is_drift"])
    assert np.allclose(outputs["p_val"].ravel(), expected["p_val"], rtol=1e-6)
    assert np.allclose(outputs["distance"].ravel(), expected["distance"], rtol=1e-6)
    assert np.allclose(outputs["threshold"].ravel(), expected["threshold"])
    assert outputs["p_val"].size == 30


def test_drift_is_found_and_clean_windows_pass(served):
    _, client, _ = served
    verdicts = {kind: bool(decode_outputs(client.infer("drift", drift_scenario(kind, 200, seed=3).X))["is_drift"][0])
                for kind in ["none", "instrument"]}
    assert verdicts == {"none": False, "instrument": True}


def tensor(data, datatype="FP64", name="window"):
    data = np.asarray(data)
    return types.RequestInput(name=name, shape=list(data.shape), datatype=datatype, data=data.ravel().tolist())


@pytest.mark.parametrize("request_inputs, words", [
    (lambda x: [tensor(x[:, :5])], "shape [rows, 30], got [50, 5]"),
    (lambda x: [tensor(x[:1])], "at least 2 rows"),
    (lambda x: [tensor(np.where(np.eye(50, 30) > 0, np.nan, x))], "NaN or infinite"),
    (lambda x: [tensor(x.astype(int), "INT64")], "FP64 or FP32, got INT64"),
    (lambda x: [tensor(x), tensor(x, name="other")], "got 2 inputs"),
])
def test_bad_windows_get_a_400_with_the_reason(served, request_inputs, words):
    _, client, _ = served
    x = drift_scenario("none", 50, seed=1).X
    with pytest.raises(InferenceServerError) as error:
        client.infer("drift", types.InferenceRequest(inputs=request_inputs(x)))
    assert error.value.status == 400
    assert words in error.value.reason
    assert client.model_ready("drift")


def test_a_ks_detector_is_served_without_tensorflow(served):
    server, _, _ = served
    maps = Path(f"/proc/{server.pid}/maps").read_text()
    assert "mlserver" in maps or "python" in maps  # the model runs in this process (parallel_workers 0)
    assert "libtensorflow" not in maps


def test_a_folder_without_a_saved_detector_fails_to_load_with_the_reason(tmp_path):
    (tmp_path / "drift" / "detector").mkdir(parents=True)
    shutil.copy(RUNTIME, tmp_path / "drift")
    (tmp_path / "drift" / "model-settings.json").write_text(json.dumps({
        "name": "drift", "implementation": "drift_detector.DriftDetector", "parameters": {"uri": "./detector"}}))
    from labkit.serving import ServerError

    with pytest.raises(ServerError, match="save_detector"):
        Server(tmp_path, settings={"parallel_workers": 0}, timeout=60).start()


def test_a_tensorflow_detector_is_served_too(tmp_path):
    """MMDDrift needs TensorFlow: the runtime loads it as usual and feeds it windows in its reference's dtype."""
    from alibi_detect.cd import MMDDrift
    from alibi_detect.saving import save_detector

    (tmp_path / "drift").mkdir()
    shutil.copy(RUNTIME, tmp_path / "drift")
    reference = drift_scenario("none", 200, seed=0).X
    scale = reference.std(axis=0)
    # standardised inputs, so that one kernel width fits every feature
    save_detector(MMDDrift((reference / scale).astype(np.float32), backend="tensorflow", n_permutations=50),
                  tmp_path / "drift" / "detector")
    (tmp_path / "drift" / "model-settings.json").write_text(json.dumps({
        "name": "drift", "implementation": "drift_detector.DriftDetector", "parameters": {"uri": "./detector"}}))
    with Server(tmp_path, settings={"parallel_workers": 0}, timeout=180) as server, Client(server) as client:
        verdicts = {}
        for kind in ["none", "instrument"]:
            window = drift_scenario(kind, 150, seed=3, **({"scale": 1.5} if kind == "instrument" else {})).X
            outputs = decode_outputs(client.infer("drift", window / scale))  # float64 on the wire
            assert outputs["p_val"].size == 1  # one test for the whole window
            verdicts[kind] = bool(outputs["is_drift"].ravel()[0])
        with pytest.raises(InferenceServerError) as error:
            client.infer("drift", np.ones((10, 4)))
        assert error.value.status == 400 and "shape [rows, 30]" in error.value.reason
    assert verdicts == {"none": False, "instrument": True}
