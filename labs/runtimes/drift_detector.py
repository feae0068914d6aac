"""A drift detector as a model: send a batch of recent inputs, get the drift verdict.

A model folder served with this runtime holds:

    drift_detector.py      this file (MLServer imports a custom runtime from the model's folder)
    detector/              an offline alibi-detect drift detector saved with alibi_detect.saving.save_detector
    model-settings.json    "implementation": "drift_detector.DriftDetector", "parameters": {"uri": "./detector"}

Each request carries one FP32/FP64 tensor: a window of rows, shape [rows, features]. The response has
``is_drift`` (BOOL, one value for the window), ``p_val`` and ``distance`` (FP64, one per feature for feature-wise
detectors such as KSDrift, one value for multivariate ones such as MMDDrift) and ``threshold`` (FP64, the
p-value threshold after any multiple-testing correction). Bad input gets a 400 that says what was received.

alibi-detect imports TensorFlow whenever it is installed, which costs a server about 500 MB. Detectors that
need no TensorFlow (KSDrift, CVMDrift, TabularDrift, ChiSquareDrift, FETDrift) are loaded with TensorFlow
hidden from this process, so the server stays small; other detectors load as usual.
"""

import sys
from pathlib import Path

import numpy as np
import toml
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

WITHOUT_TENSORFLOW = {"KSDrift", "CVMDrift", "TabularDrift", "ChiSquareDrift", "FETDrift"}
MIN_ROWS = 2


class DriftDetector(MLModel):
    async def load(self) -> bool:
        folder = Path(await get_model_uri(self.settings))
        config = folder / "config.toml"
        if not config.exists():
            raise FileNotFoundError(f"{folder} holds no config.toml: save the detector with "
                                    "alibi_detect.saving.save_detector(detector, folder)")
        kind = toml.loads(config.read_text()).get("name", "")
        if kind in WITHOUT_TENSORFLOW and "tensorflow" not in sys.modules:
            sys.modules["tensorflow"] = None  # `import tensorflow` now fails, so alibi-detect runs without it
        from alibi_detect.saving import load_detector

        self._detector = load_detector(folder)
        self._kind = kind
        # Backend detectors (MMDDrift, ...) keep their reference data in an inner detector. After a
        # preprocess_fn it no longer has the inputs' shape, so the window's shape cannot be checked here.
        inner = getattr(self._detector, "_detector", self._detector)
        x_ref = getattr(inner, "x_ref", None)
        raw = x_ref is not None and getattr(inner, "preprocess_fn", None) is None and np.ndim(x_ref) == 2
        self._n_features = np.shape(x_ref)[1] if raw else None
        self._dtype = np.asarray(x_ref).dtype if raw else np.float64
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        window = self._window(payload)
        try:
            result = self._detector.predict(window, return_p_val=True, return_distance=True)["data"]
        except ValueError as e:  # a window the detector cannot compare with its reference
            raise InferenceError(f"the detector cannot test this window: {e}") from None
        outputs = {
            "is_drift": np.array([bool(result["is_drift"])]),
            "p_val": np.atleast_1d(np.asarray(result["p_val"], dtype=np.float64)),
            "distance": np.atleast_1d(np.asarray(result["distance"], dtype=np.float64)),
            "threshold": np.atleast_1d(np.asarray(result["threshold"], dtype=np.float64)),
        }
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, value) for name, value in outputs.items()],
        )

    def _window(self, payload: InferenceRequest) -> np.ndarray:
        if len(payload.inputs) != 1:
            raise InferenceError(f"send one tensor, the window of rows; got {len(payload.inputs)} inputs")
        tensor = payload.inputs[0]
        if tensor.datatype not in ("FP64", "FP32"):
            raise InferenceError(f"the window must be FP64 or FP32, got {tensor.datatype}")
        window = np.asarray(NumpyRequestCodec.decode_request(payload), dtype=np.float64)
        expected = f"[rows, {self._n_features}]" if self._n_features else "[rows, features]"
        if window.ndim != 2 or (self._n_features and window.shape[1] != self._n_features):
            raise InferenceError(f"the window must have shape {expected}, got {list(window.shape)}")
        if window.shape[0] < MIN_ROWS:
            raise InferenceError(f"a window needs at least {MIN_ROWS} rows to compare distributions, "
                                 f"got {window.shape[0]}")
        if not np.isfinite(window).all():
            raise InferenceError("the window contains NaN or infinite values; drop or impute them first")
        return window.astype(self._dtype)
