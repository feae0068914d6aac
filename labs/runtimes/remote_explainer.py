"""An explainer served as its own model, in the design of MLServer's alibi-explain runtime.

It holds no model: to explain a row it calls another model's V2 infer endpoint (``parameters.extra.infer_url``)
with KernelExplainer's coalitions, one batched request per evaluation. A model folder holds this file,
``background.npy`` and a ``model-settings.json`` with ``"implementation": "remote_explainer.RemoteExplainer"``
and ``parameters.extra``: ``infer_url``, ``background``, ``nsamples`` (coalitions per row, default 200) and
``output`` (the name of the probabilities output, default ``predict_proba``).

Each response has ``shap_values`` and ``base_value`` for P(class 1), and ``model_requests`` and ``model_rows``:
what the explanation cost the explained model.
"""

import asyncio
from pathlib import Path

import httpx
import numpy as np
import shap
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse


class RemoteExplainer(MLModel):
    async def load(self) -> bool:
        extra = self.settings.parameters.extra
        folder = Path(self.settings._source).parent  # the folder of model-settings.json
        self._background = np.load(folder / str(extra.get("background", "background.npy")))
        self._url = str(extra["infer_url"])
        self._output = str(extra.get("output", "predict_proba"))
        self._nsamples = int(extra.get("nsamples", 200))
        self._http = httpx.Client(timeout=30, trust_env=False)
        # The explained model may not be up yet while this one loads: build the explainer (which calls it
        # on the background) at the first request.
        self._explainer = None
        self._calls = [0, 0]
        return True

    def _predict(self, rows: np.ndarray) -> np.ndarray:
        """P(class 1) of each row, from one request to the explained model."""
        self._calls[0] += 1
        self._calls[1] += len(rows)
        body = NumpyRequestCodec.encode_request(np.asarray(rows, dtype=np.float64)).model_dump(exclude_none=True)
        body["outputs"] = [{"name": self._output}]
        reply = self._http.post(self._url, json=body)
        if reply.status_code != 200:
            raise RuntimeError(f"the explained model answered {reply.status_code}: {reply.text[:200]}")
        output = reply.json()["outputs"][0]
        return np.asarray(output["data"], dtype=np.float64).reshape(output["shape"])[:, 1]

    def _explain(self, rows: np.ndarray):
        if self._explainer is None:
            self._explainer = shap.KernelExplainer(self._predict, self._background)
        self._calls = [0, 0]
        values = self._explainer.shap_values(rows, nsamples=self._nsamples, silent=True)
        base = np.full((len(rows), 1), float(self._explainer.expected_value))
        return base, np.asarray(values), list(self._calls)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            rows = np.asarray(self.decode_request(payload, default_codec=NumpyRequestCodec), dtype=np.float64)
        except Exception as error:
            raise InferenceError(f"cannot decode the request: {error}") from None
        n_features = self._background.shape[1]
        if rows.ndim != 2 or rows.shape[1] != n_features or not 1 <= len(rows) <= 50:
            raise InferenceError(f"send 1 to 50 rows of {n_features} features, not shape {list(rows.shape)}")
        if not np.isfinite(rows).all():
            raise InferenceError("send finite numbers")
        # the explainer's calls to the model block: run them in a thread, so this server can answer them
        base, values, (requests, model_rows) = await asyncio.to_thread(self._explain, rows)
        outputs = {"shap_values": values, "base_value": base, "model_requests": np.array([[requests]]),
                   "model_rows": np.array([[model_rows]])}
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(k, v) for k, v in outputs.items()])
