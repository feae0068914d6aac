"""A classifier that reports, with every prediction, whether its input looks adversarial, and corrects it.

A model folder served with this runtime holds:

    attack_guard.py        this file (MLServer imports a custom runtime from the model's folder)
    classifier.npz         the classifier as a chain of dense layers: kernel_0, bias_0, kernel_1, ... and
                           `activations` (one of "linear", "relu", "tanh", "sigmoid", "softmax" per layer);
                           its last layer gives class probabilities
    detector.npz           the detector's autoencoder, the same way (its output is an image of the same size);
                           without it the runtime serves the classifier alone, and responses have `predict` only
    model-settings.json    "implementation": "attack_guard.AttackGuard",
                           "parameters": {"uri": "./classifier.npz", "extra": {"threshold": T}}

The adversarial score of a row is the KL divergence between the classifier's probabilities on the row and on the
autoencoder's reconstruction of it (Vacanti and Klaise, 2020). Each request carries one FP32/FP64 tensor of rows
of pixels in [0, 1]; each response has four outputs per row: ``predict`` (INT64 class), ``adversarial_score``
(FP64), ``is_adversarial`` (BOOL, score above the threshold) and ``corrected`` (INT64: for a flagged row the class
predicted on the reconstruction, else ``predict``). Bad input gets a 400 that says what was received.

Stateful defence (Chen, Carlini and Wagner, 2019), on when ``extra`` has ``"stateful": {"memory": M, "k": K,
"distance": D}``: the runtime keeps the last M rows each client sent (the request parameter ``client``), and a
row whose K nearest neighbours among them are closer than D on average marks its client as attacking: that
client's requests then get a 403. A query-based attack probes one image over and over with tiny changes; ordinary
traffic does not. Two limits: the client sets ``client`` itself, so a new name per query escapes the defence (in
production a gateway that authenticates the caller must set it); and the memory and the blocked list live in
this worker process, so with several workers (MLServer hands them requests in turn) or replicas each sees only
its share of a client's queries, and a client blocked by one is still answered by the others.

Everything runs in numpy: TensorFlow would cost this server about 800 MB.
"""

from collections import OrderedDict, deque
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.errors import InferenceError, MLServerError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

MAX_CLIENTS = 1000  # clients remembered at once; the least recently seen is forgotten first


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "softmax": _softmax,
}


def load_dense(path: Path) -> list:
    """The (kernel, bias, activation) layers saved in ``path``, or a ValueError saying what is wrong."""
    with np.load(path) as saved:
        if "activations" not in saved:
            raise ValueError(f"{path.name} has no `activations`: save it with labkit.adversarial.save_dense")
        activations = [str(a) for a in saved["activations"]]
        unknown = sorted(set(activations) - set(ACTIVATIONS))
        if unknown:
            raise ValueError(f"{path.name}: unknown activations {unknown}; known: {sorted(ACTIVATIONS)}")
        return [(saved[f"kernel_{i}"], saved[f"bias_{i}"], ACTIVATIONS[a]) for i, a in enumerate(activations)]


def run_dense(layers: list, x: np.ndarray) -> np.ndarray:
    for kernel, bias, activation in layers:
        x = activation(x @ kernel + bias)
    return x


class AttackGuard(MLModel):
    async def load(self) -> bool:
        classifier_path = Path(await get_model_uri(self.settings))
        self._classifier = load_dense(classifier_path)
        detector_path = classifier_path.parent / "detector.npz"
        self._autoencoder = load_dense(detector_path) if detector_path.exists() else None
        extra = (self.settings.parameters.extra or {}) if self.settings.parameters else {}
        if self._autoencoder is None:
            self._threshold = None
        elif "threshold" not in extra:
            raise ValueError("model-settings.json needs parameters.extra.threshold, the adversarial score threshold")
        else:
            self._threshold = float(extra["threshold"])
        self._n_pixels = self._classifier[0][0].shape[0]
        if self._autoencoder is not None and (self._autoencoder[0][0].shape[0], self._autoencoder[-1][0].shape[1]) != (
                self._n_pixels, self._n_pixels):
            raise ValueError(f"detector.npz must map {self._n_pixels} pixels to {self._n_pixels} (an image to its "
                             f"reconstruction), not {self._autoencoder[0][0].shape[0]} to "
                             f"{self._autoencoder[-1][0].shape[1]}: save the encoder and the decoder together")
        stateful = extra.get("stateful")
        self._stateful = None
        if stateful:
            self._stateful = {"memory": int(stateful["memory"]), "k": int(stateful["k"]),
                              "distance": float(stateful["distance"])}
        self._memory: OrderedDict[str, deque] = OrderedDict()
        self._blocked: set[str] = set()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = self._decode(payload)
        if self._stateful:
            self._remember(self._client(payload), rows)
        probabilities = run_dense(self._classifier, rows)
        outputs = {"predict": probabilities.argmax(axis=1).astype(np.int64)}
        if self._autoencoder is not None:
            rebuilt = run_dense(self._classifier, run_dense(self._autoencoder, rows))
            scores = self.adversarial_score(probabilities, rebuilt)
            flagged = scores > self._threshold
            outputs |= {"adversarial_score": scores, "is_adversarial": flagged,
                        "corrected": np.where(flagged, rebuilt.argmax(axis=1), outputs["predict"]).astype(np.int64)}
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, value.reshape(-1, 1)) for name, value in outputs.items()],
        )

    @staticmethod
    def adversarial_score(p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """KL(p || q) per row: how much the prediction changes when the input is replaced by its reconstruction."""
        p, q = np.clip(p, 1e-10, 1), np.clip(q, 1e-10, 1)
        return (p * np.log(p / q)).sum(axis=1)

    def _client(self, payload: InferenceRequest) -> str:
        extra = (payload.parameters.model_extra or {}) if payload.parameters else {}
        return str(extra.get("client", "anonymous"))[:100]

    def _remember(self, client: str, rows: np.ndarray) -> None:
        """Block ``client`` (a 403, now and later) if these rows crowd around rows it sent recently."""
        if client in self._blocked:
            raise MLServerError(f"client {client!r} is blocked: its queries crowd together as an attack's do",
                                status_code=403)
        memory = self._memory.pop(client, None) or deque(maxlen=self._stateful["memory"])
        self._memory[client] = memory  # most recently seen last
        while len(self._memory) > MAX_CLIENTS:
            self._memory.popitem(last=False)
        k = self._stateful["k"]
        for row in rows:
            if len(memory) >= k:
                distances = np.sqrt(((np.asarray(memory) - row) ** 2).sum(axis=1))
                if np.partition(distances, k - 1)[:k].mean() < self._stateful["distance"]:
                    self._blocked.add(client)
                    self._memory.pop(client, None)
                    raise MLServerError(f"client {client!r} is blocked: its queries crowd together as an "
                                        "attack's do", status_code=403)
            memory.append(row)

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
        if rows.min(initial=0) < 0 or rows.max(initial=0) > 1:
            raise InferenceError(f"pixels must be in [0, 1], got values from {rows.min():.3g} to {rows.max():.3g}")
        return rows
