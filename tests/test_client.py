import numpy as np
import pandas as pd
import pytest
from mlserver import types

from labkit.client import Client, InferenceServerError, as_request, decode_outputs
from labkit.serving import Server

PROTOCOLS = ["rest", "grpc"]
ROWS = slice(0, 40)
NOT_FOUND = {"rest": 404, "grpc": "NOT_FOUND"}
BAD_REQUEST = {"rest": 400, "grpc": "INVALID_ARGUMENT"}


@pytest.fixture(scope="module")
def server(sklearn_repo):
    with Server(sklearn_repo, settings={"parallel_workers": 0}) as server:
        yield server


@pytest.fixture(scope="module", params=PROTOCOLS)
def client(request, server):
    with Client(server, request.param) as client:
        yield client


@pytest.fixture(scope="module")
def clients(server):
    with Client(server, "rest") as rest, Client(server, "grpc") as grpc:
        yield {"rest": rest, "grpc": grpc}


def with_outputs(request, *names):
    request = request.model_copy()
    request.outputs = [types.RequestOutput(name=name) for name in names]
    return request


def test_health(client):
    assert client.live() is True
    assert client.ready() is True
    assert client.model_ready("cancer") is True
    assert client.model_ready("no-such-model") is False


def test_metadata(client):
    meta = client.metadata("cancer")
    assert isinstance(meta, types.MetadataModelResponse)
    assert meta.name == "cancer"
    assert client.metadata().name == "mlserver"


def test_predict_numpy_matches_the_model_in_process(client, dataset, classifier):
    X = dataset.X.values[ROWS]
    outputs = client.predict("cancer", X)
    assert set(outputs) == {"predict"}
    assert outputs["predict"].size == len(X)
    np.testing.assert_array_equal(outputs["predict"].reshape(-1), classifier.predict(X))


def test_predict_dataframe_matches_the_model_in_process(client, dataset, classifier):
    frame = dataset.X.iloc[ROWS]
    request = as_request(frame)
    assert len(request.inputs) == frame.shape[1], "one input per column"
    outputs = client.predict("cancer", request)
    np.testing.assert_array_equal(outputs["predict"].reshape(-1), classifier.predict(frame.values))


def test_predict_with_requested_outputs(client, dataset, classifier):
    X = dataset.X.values[ROWS]
    outputs = client.predict("cancer", with_outputs(as_request(X), "predict", "predict_proba"))
    assert set(outputs) == {"predict", "predict_proba"}
    np.testing.assert_array_equal(outputs["predict"].reshape(-1), classifier.predict(X))
    assert outputs["predict_proba"].shape == (len(X), 2)
    np.testing.assert_allclose(outputs["predict_proba"], classifier.predict_proba(X), rtol=0, atol=1e-12)


def test_rest_and_grpc_decode_to_identical_arrays(clients, dataset):
    request = with_outputs(as_request(dataset.X.values), "predict", "predict_proba")
    rest = clients["rest"].predict("cancer", request)
    grpc = clients["grpc"].predict("cancer", request)
    assert rest.keys() == grpc.keys()
    for name in rest:
        assert rest[name].dtype == grpc[name].dtype, name
        np.testing.assert_array_equal(rest[name], grpc[name])
    # the raw responses agree too, apart from the request id
    raw = {p: clients[p].infer("cancer", request) for p in PROTOCOLS}
    assert raw["rest"].model_name == raw["grpc"].model_name == "cancer"
    for a, b in zip(raw["rest"].outputs, raw["grpc"].outputs, strict=True):
        assert (a.name, a.shape, a.datatype) == (b.name, b.shape, b.datatype)
    assert decode_outputs(raw["rest"]).keys() == rest.keys()


def test_unknown_model_is_an_error_with_the_servers_reason(client, dataset):
    with pytest.raises(InferenceServerError) as error:
        client.predict("no-such-model", dataset.X.values[:2])
    assert error.value.status == NOT_FOUND[client.protocol]
    assert "no-such-model" in error.value.reason
    assert "no-such-model" in str(error.value)


def test_unknown_model_metadata_is_an_error(client):
    with pytest.raises(InferenceServerError) as error:
        client.metadata("no-such-model")
    assert error.value.status == NOT_FOUND[client.protocol]
    assert "no-such-model" in error.value.reason


def test_unknown_output_is_a_bad_request(client, dataset):
    with pytest.raises(InferenceServerError) as error:
        client.predict("cancer", with_outputs(as_request(dataset.X.values[:2]), "bogus"))
    assert error.value.status == BAD_REQUEST[client.protocol]
    assert "bogus" in error.value.reason
    assert "predict_proba" in error.value.reason, "the reason says what is accepted"


def test_invalid_datatype_in_a_raw_dict_gives_the_servers_422(clients):
    raw = {"inputs": [{"name": "x", "shape": [1, 30], "datatype": "FLOAT99", "data": [1.0] * 30}]}
    with pytest.raises(InferenceServerError) as error:
        clients["rest"].predict("cancer", raw)
    assert error.value.status == 422
    assert "datatype" in error.value.reason
    assert "FP64" in error.value.reason, "the reason lists the accepted datatypes"
    assert "\n" not in error.value.reason


@pytest.mark.parametrize("payload", [[[1.0] * 30], (1.0,) * 30, "1,2,3", 3.0, None, pd.Series([1.0] * 30)],
                         ids=["list", "tuple", "str", "float", "None", "Series"])
def test_as_request_rejects_unsupported_types(payload):
    with pytest.raises(TypeError, match="numpy array"):
        as_request(payload)


def test_as_request_passes_requests_through_and_validates_dicts(dataset):
    request = as_request(dataset.X.values[:3])
    assert as_request(request) is request
    again = as_request(request.model_dump(exclude_none=True))
    assert again.inputs[0].shape == [3, 30]
    assert again.inputs[0].datatype in ("FP64", types.Datatype.FP64)
    np.testing.assert_array_equal(np.asarray(again.inputs[0].data.root).reshape(3, 30), dataset.X.values[:3])


def test_unknown_protocol_is_refused(server):
    with pytest.raises(ValueError, match="protocol"):
        Client(server, "http")


def test_server_still_answers_after_bad_requests(clients, server, dataset, classifier):
    X = dataset.X.values[:5]
    bad_requests = [
        ("no-such-model", X),
        ("cancer", with_outputs(as_request(X), "bogus")),
        ("cancer", np.ones((2, 7))),  # wrong number of features
    ]
    for client in clients.values():
        for name, payload in bad_requests:
            with pytest.raises(InferenceServerError):
                client.predict(name, payload)
    assert server.running
    for client in clients.values():
        assert client.ready() and client.model_ready("cancer")
        outputs = client.predict("cancer", X)
        np.testing.assert_array_equal(outputs["predict"].reshape(-1), classifier.predict(X))
