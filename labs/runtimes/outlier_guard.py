"""A classifier that reports, with every prediction, how unusual its input is.

A model folder served with this runtime holds:

    outlier_guard.py       this file (MLServer imports a custom runtime from the model's folder)
    classifier.joblib      a scikit-learn classifier of rows of pixels
    autoencoder.npz        the autoencoder as a chain of dense layers: kernel_0, bias_0, kernel_1, ...
                           and `activations` (one of "linear", "relu", "sigmoid" per layer)
    model-settings.json    "implementation": "outlier_guard.OutlierGuard",
                           "parameters": {"uri": "./classifier.joblib", "extra": {"threshold": T}}

Each request carries one FP32/FP64 tensor of rows of pixels in [0, 1]. Each response has three outputs per row:
``predict`` (INT64 class), ``outlier_score`` (FP64, mean squared error of the autoencoder's reconstruction)
and ``is_outlier`` (BOOL, score above the threshold). Bad input gets a 400 that says what was received.

The autoencoder runs in numpy: a few dense layers need no TensorFlow, which would cost this server about
800 MB, and so the server can run with ``parallel_workers`` 0 in a laptop's memory.
"""

from pathlib import Path

import joblib
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
}


class OutlierGuard(MLModel):
    async def load(self) -> bool:
        classifier_path = Path(await get_model_uri(self.settings))
        self._classifier = joblib.load(classifier_path)
        with np.load(classifier_path.parent / "autoencoder.npz") as saved:
            activations = [str(a) for a in saved["activations"]]
            self._layers = [(saved[f"kernel_{i}"], saved[f"bias_{i}"], ACTIVATIONS[a])
                            for i, a in enumerate(activations)]
        extra = (self.settings.parameters.extra or {}) if self.settings.parameters else {}
        if "threshold" not in extra:
            raise ValueError("model-settings.json needs parameters.extra.threshold, the outlier threshold")
        self._threshold = float(extra["threshold"])
        self._n_pixels = self._layers[0][0].shape[0]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = self._decode(payload)
        scores = self.outlier_score(rows)
        outputs = {
            "predict": self._classifier.predict(rows).astype(np.int64),
            "outlier_score": scores,
            "is_outlier": scores > self._threshold,
        }
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, value.reshape(-1, 1)) for name, value in outputs.items()],
        )

    def outlier_score(self, rows: np.ndarray) -> np.ndarray:
        """Mean squared difference between each row and its reconstruction."""
        x = rows
        for kernel, bias, activation in self._layers:
            x = activation(x @ kernel + bias)
        return ((rows - x) ** 2).mean(axis=1)

    def _decode(self, payload: InferenceRequest) -> np.ndarray:
        if len(payload.inputs) != 1:
            raise InferenceError(f"send one input tensor of rows of {self._n_pixels} pixels, "
                                 f"not {len(payload.inputs)} inputs")
        tensor = payload.inputs[0]
        if tensor.datatype not in ("FP32", "FP64"):
            raise InferenceError(f"pixels must be FP32 or FP64, not {tensor.datatype}")
        rows = np.asarray(NumpyRequestCodec.decode_request(payload), dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self._n_pixels:
            raise InferenceError(f"expected shape [-1, {self._n_pixels}] (rows of {self._n_pixels} pixels), "
                                 f"got {list(tensor.shape)}")
        if not np.isfinite(rows).all():
            raise InferenceError("pixels must be finite numbers (no NaN or infinity)")
        return rows
