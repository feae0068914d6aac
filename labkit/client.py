"""Open Inference Protocol (V2) calls over REST and gRPC.

Requests and responses are ``mlserver.types`` objects on both protocols: REST
sends their JSON, gRPC converts them with ``mlserver.grpc.converters``. So the
same request gives the same response object whichever protocol carries it, and
MLServer's codecs encode and decode the tensors.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import numpy as np
import pandas as pd
from mlserver import types
from mlserver.codecs import NumpyRequestCodec, PandasCodec
from mlserver.codecs.base import find_input_codec
from mlserver.grpc import converters
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub
from pydantic import ValidationError


JSON_HEADERS = {"content-type": "application/json"}
# gRPC's default limit is 4 MB; a batch of a few thousand rows is larger.
GRPC_OPTIONS = [("grpc.max_receive_message_length", 64 * 2**20)]


class InferenceServerError(RuntimeError):
    """The server refused a call; ``status`` is the HTTP status (or gRPC code name), ``reason`` its message."""

    def __init__(self, status: int | str, reason: str, call: str = ""):
        self.status = status
        self.reason = reason
        super().__init__(f"{call} failed with {status}: {reason}" if call else f"{status}: {reason}")


def as_request(payload: Any) -> types.InferenceRequest:
    """An ``InferenceRequest`` from a request, its JSON dict, a numpy array or a DataFrame."""
    if isinstance(payload, types.InferenceRequest):
        return payload
    if isinstance(payload, dict):
        try:
            return types.InferenceRequest.model_validate(payload)
        except ValidationError as e:
            raise ValueError(f"not a valid V2 inference request: {validation_message(e)}") from None
    if isinstance(payload, pd.DataFrame):
        return PandasCodec.encode_request(payload)
    if isinstance(payload, np.ndarray):
        return NumpyRequestCodec.encode_request(payload)
    raise TypeError(
        f"cannot send a {type(payload).__name__}: pass an InferenceRequest, its JSON as a dict, "
        "a numpy array or a pandas DataFrame"
    )


def rest_body(payload: Any) -> str:
    """The JSON body of a REST inference call: a dict goes as it is, so the server (not this client) judges it
    and says why it refuses; anything else is encoded by ``as_request``."""
    if isinstance(payload, dict):
        return json.dumps(payload)
    return as_request(payload).model_dump_json(exclude_none=True)


def grpc_request(name: str, payload: Any, version: str | None = None) -> pb.ModelInferRequest:
    """The protobuf ``ModelInferRequest`` for ``payload`` (see ``as_request``), by MLServer's converters."""
    return converters.ModelInferRequestConverter.from_types(as_request(payload), name, version or "")


def decode_outputs(response: types.InferenceResponse) -> dict[str, Any]:
    """Each output of a response decoded by its content type (numpy array or list of str)."""
    decoded = {}
    for output in response.outputs:
        content_type = output.parameters.content_type if output.parameters else None
        if content_type is None:
            content_type = "str" if output.datatype == types.Datatype.BYTES else "np"
        codec = find_input_codec(content_type) or find_input_codec("np")
        decoded[output.name] = codec.decode_output(output)
    return decoded


class Client:
    """A V2 client for one server, over ``"rest"`` or ``"grpc"``.

    ``target`` is a ``labkit.serving.Server``, a base URL (REST) or ``host:port`` (gRPC).
    """

    def __init__(self, target: Any, protocol: str = "rest", timeout: float = 30):
        if protocol not in ("rest", "grpc"):
            raise ValueError(f"protocol must be 'rest' or 'grpc', not {protocol!r}")
        self.protocol = protocol
        self.timeout = timeout
        if hasattr(target, "url"):
            target = target.url if protocol == "rest" else target.grpc_target
        self.target = str(target)
        if protocol == "rest":
            self._http = httpx.Client(base_url=self.target, timeout=timeout, trust_env=False)
        else:
            self._channel = grpc.insecure_channel(self.target, options=GRPC_OPTIONS)
            self._stub = GRPCInferenceServiceStub(self._channel)

    # -- health and metadata ----------------------------------------------
    def live(self) -> bool:
        if self.protocol == "rest":
            return self._get_status("/v2/health/live") == 200
        return self._grpc("ServerLive", pb.ServerLiveRequest()).live

    def ready(self) -> bool:
        if self.protocol == "rest":
            return self._get_status("/v2/health/ready") == 200
        return self._grpc("ServerReady", pb.ServerReadyRequest()).ready

    def model_ready(self, name: str, version: str | None = None) -> bool:
        if self.protocol == "rest":
            return self._get_status(f"{_model_path(name, version)}/ready") == 200
        try:
            return self._grpc("ModelReady", pb.ModelReadyRequest(name=name, version=version or "")).ready
        except InferenceServerError:
            return False

    def metadata(self, name: str | None = None, version: str | None = None):
        """Server metadata, or a model's (``MetadataModelResponse``) when ``name`` is given."""
        if self.protocol == "rest":
            path = "/v2" if name is None else _model_path(name, version)
            data = self._check(self._http.get(path), f"GET {path}").json()
            model = types.MetadataServerResponse if name is None else types.MetadataModelResponse
            return model.model_validate(data)
        if name is None:
            reply = self._grpc("ServerMetadata", pb.ServerMetadataRequest())
            return converters.ServerMetadataResponseConverter.to_types(reply)
        reply = self._grpc("ModelMetadata", pb.ModelMetadataRequest(name=name, version=version or ""))
        return converters.ModelMetadataResponseConverter.to_types(reply)

    # -- inference ----------------------------------------------------------
    def infer(self, name: str, payload: Any, version: str | None = None) -> types.InferenceResponse:
        """Send ``payload`` (see ``as_request``) to model ``name``; an ``InferenceServerError`` on refusal."""
        if self.protocol == "rest":
            path = infer_path(name, version)
            reply = self._http.post(path, content=rest_body(payload), headers=JSON_HEADERS)
            return types.InferenceResponse.model_validate(self._check(reply, f"POST {path}").json())
        message = grpc_request(name, payload, version)
        return converters.ModelInferResponseConverter.to_types(self._grpc("ModelInfer", message))

    def predict(self, name: str, payload: Any, version: str | None = None) -> dict[str, Any]:
        """``infer`` and decode every output: ``{"predict": array([...]), ...}``."""
        return decode_outputs(self.infer(name, payload, version))

    # -- plumbing -------------------------------------------------------------
    def close(self) -> None:
        if self.protocol == "rest":
            self._http.close()
        else:
            self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self.protocol} {self.target}>"

    def _get_status(self, path: str) -> int:
        try:
            return self._http.get(path).status_code
        except httpx.HTTPError:
            return 0

    def _check(self, reply: httpx.Response, call: str) -> httpx.Response:
        if reply.status_code >= 400:
            raise InferenceServerError(reply.status_code, rest_error_reason(reply), call)
        return reply

    def _grpc(self, method: str, message):
        try:
            return getattr(self._stub, method)(message, timeout=self.timeout)
        except grpc.RpcError as e:
            raise InferenceServerError(e.code().name, e.details() or "", method) from None


def _model_path(name: str, version: str | None) -> str:
    return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")


def infer_path(name: str, version: str | None = None) -> str:
    """The REST path of a model's inference endpoint."""
    return f"{_model_path(name, version)}/infer"


def validation_message(error: ValidationError) -> str:
    """The first problem pydantic found, on one line: ``inputs.0.datatype: Input should be ...``."""
    return _located(error.errors()[0])


def _located(problem: dict) -> str:
    where = ".".join(str(p) for p in problem.get("loc", ())) or "the top level"
    return f"{where}: {problem.get('msg')}"


def rest_error_reason(reply: httpx.Response) -> str:
    """The server's own words: MLServer's ``error``, FastAPI's validation ``detail``, or the last log line."""
    try:
        body = reply.json()
    except ValueError:
        lines = [line.strip() for line in reply.text.splitlines() if line.strip()]
        return lines[-1] if lines else reply.reason_phrase
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    if isinstance(body, dict) and isinstance(body.get("detail"), list):
        return "; ".join(_located(item) for item in body["detail"])
    return reply.text
