"""Runtimes of lab 03, "Scale and monitor": a scikit-learn model served batch by batch.

``BatchAwareModel`` handles any number of rows per call, which adaptive batching relies on, and reports the
rows of every call it receives as the custom metric ``batch_rows`` (a histogram labelled by model), so the
metrics show whether requests were really batched. ``OneRowModel`` is the classic mistake: written for one row
per request, it breaks as soon as the server merges requests into a batch.
"""

import joblib
import mlserver
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class BatchAwareModel(MLModel):
    async def load(self) -> bool:
        self._model = joblib.load(await get_model_uri(self.settings))
        mlserver.register("batch_rows", "Rows per call of the runtime's predict, after adaptive batching")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = self._rows(payload)
        mlserver.log(batch_rows=len(rows))
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output("predict", self._model.predict(rows))],
        )

    def _rows(self, payload: InferenceRequest):
        if len(payload.inputs) != 1:
            raise InferenceError(f"expected one input tensor of rows, got {len(payload.inputs)}")
        rows = NumpyCodec.decode_input(payload.inputs[0])
        expected = self._model.n_features_in_
        if rows.ndim != 2 or rows.shape[1] != expected:
            raise InferenceError(f"expected rows of {expected} features (shape [-1, {expected}]), "
                                 f"got shape {list(rows.shape)}")
        return rows


class OneRowModel(BatchAwareModel):
    """The pitfall: assumes one row per call, as a hand test with one request suggests."""

    def _rows(self, payload: InferenceRequest):
        # One request, one row... until the server merges 16 requests into one call of 16 rows.
        return NumpyCodec.decode_input(payload.inputs[0]).reshape(1, -1)
