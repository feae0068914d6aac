"""An MLServer runtime that explains each prediction it makes with SHAP values.

A model folder served with this runtime holds:

    explainer_runtime.py   this file (MLServer imports a custom runtime from the model's folder)
    model.joblib           a scikit-learn tree ensemble for two classes (gradient boosting, random forest)
    background.npy         the background rows the SHAP values are computed against
    model-settings.json    "implementation": "explainer_runtime.ExplainedModel",
                           "parameters": {"uri": "./model.joblib", "extra": {"background": "background.npy"}}

The explainer is built once, in load(). Each request carries one FP32/FP64 tensor of rows; each response has
``probabilities`` (rows x 2), and beside them ``shap_values`` (rows x features, for P(class 1)) and
``base_value`` (one per row): base value plus the row's SHAP values equals its P(class 1). Bad input gets a
400 that says what was received.
"""

from pathlib import Path

import joblib
import numpy as np
import shap
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

OUTPUTS = ("probabilities", "shap_values", "base_value")


class ExplainedModel(MLModel):
    async def load(self) -> bool:
        model_path = Path(await get_model_uri(self.settings))
        self._model = joblib.load(model_path)
        extra = (self.settings.parameters.extra or {}) if self.settings.parameters else {}
        background = np.load(model_path.parent / str(extra.get("background", "background.npy")))
        self._n_features = background.shape[1]
        self._max_rows = int(extra.get("max_rows", 1000))  # an explanation costs more than a prediction
        self._explainer = self._build_explainer(self._model, background)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        wanted = [output.name for output in payload.outputs or []] or list(OUTPUTS)
        unknown = sorted(set(wanted) - set(OUTPUTS))
        if unknown:
            raise InferenceError(f"unknown output {unknown[0]!r}; this model offers {list(OUTPUTS)}")
        rows = self._rows(payload)
        base_values, shap_values = self._explain(rows)
        values = {"probabilities": self._model.predict_proba(rows), "shap_values": shap_values,
                  "base_value": np.asarray(base_values, dtype=np.float64).reshape(-1, 1)}
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output(name, values[name]) for name in wanted])

    def _build_explainer(self, model, background: np.ndarray):
        """The SHAP explainer of P(class 1), exact for trees, against the background rows."""
        ### BEGIN SOLUTION
        return shap.TreeExplainer(model, background, feature_perturbation="interventional",
                                  model_output="probability")
        ### END SOLUTION

    def _explain(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The base value of each row (shape (n,)) and its SHAP values for P(class 1) (shape (n, features))."""
        ### BEGIN SOLUTION
        explanation = self._explainer(rows)
        values, base = explanation.values, np.asarray(explanation.base_values, dtype=np.float64)
        if values.ndim == 3:  # one set per class (random forests): keep class 1's
            values, base = values[..., 1], base.reshape(len(rows), -1)[:, 1]
        return np.broadcast_to(base.reshape(-1), (len(rows),)), values
        ### END SOLUTION

    def _rows(self, payload: InferenceRequest) -> np.ndarray:
        """The request's rows as a float64 array, or an InferenceError (a 400) that says what to send."""
        if len(payload.inputs) != 1:
            raise InferenceError(f"send one input tensor of rows of {self._n_features} features, "
                                 f"not {len(payload.inputs)} inputs")
        if payload.inputs[0].datatype not in ("FP32", "FP64"):
            raise InferenceError(f"features must be FP32 or FP64 numbers, not {payload.inputs[0].datatype}")
        try:
            rows = np.asarray(self.decode_request(payload, default_codec=NumpyRequestCodec), dtype=np.float64)
        except Exception as error:  # a shape that does not fit the data, values that are not numbers
            raise InferenceError(f"cannot decode the request: {error}") from None
        if rows.ndim != 2 or rows.shape[1] != self._n_features:
            raise InferenceError(f"expected shape [rows, {self._n_features}], got {list(rows.shape)}")
        if not 1 <= len(rows) <= self._max_rows:
            raise InferenceError(f"send 1 to {self._max_rows} rows per request, not {len(rows)}")
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if bad.size:
            raise InferenceError(f"rows {bad[:5].tolist()} contain NaN or infinity; send finite numbers")
        return rows
