"""Lab 09's service: the digit classifier and the detectors of labs 06-08, chained in one MLServer model.

MLServer has no inference graphs, so the chaining happens here, in the runtime: each request goes through the
outlier stage, the model, the adversarial stage and the drift window, in that order (``labkit.guard.chain``, the
same code the checks run), in one process and without a network hop between stages. The router in front
(``labkit.router``) only splits traffic between versions: it knows nothing of the stages.

A model folder served with this runtime holds:

    guarded_service.py     this file
    classifier.npz         the classifier (dense layers, ``labkit.guard.Pipeline.save``)
    autoencoder.npz        the detectors' autoencoder
    detectors.npz          thresholds and the drift test's reference rows
    model-settings.json    "implementation": "guarded_service.GuardedService",
                           "parameters": {"uri": "./", "extra": {"log": PATH, "blocklist": PATH,
                                                                   "fail_below_ink": null}}

Each request carries one FP32/FP64 tensor of rows of 64 pixels in [0, 1], and may carry the parameters
``client`` (who sent it; a gateway would set it from credentials) and ``t`` (the simulated hour of the replay).
The response has, per row: ``predict`` (INT64), ``confidence``, ``outlier_score``, ``adversarial_score``,
``drift_p`` (FP64) and the flags ``is_outlier`` and ``is_adversarial`` (BOOL).

Payload log: one JSON line per request in ``extra.log``: the request's ``id``, client, ``t``, version, HTTP
status, every stage's output and ``stage_ms``, the time each stage took. Clients listed in the JSON file
``extra.blocklist`` (re-read when it changes) get a 403. ``fail_below_ink`` is the bad deploy's bug (HTTP 500).
Metrics per stage come from ``stage_ms`` in the log: with ``parallel_workers`` 0, which keeps this server small,
MLServer leaves custom metrics out of ``/metrics`` (lab 02).
"""

import json
import time
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.errors import InferenceError, MLServerError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from labkit.guard import DriftWindow, Pipeline, ServerBug, chain


class GuardedService(MLModel):
    async def load(self) -> bool:
        folder = Path(await get_model_uri(self.settings))
        folder = folder if folder.is_dir() else folder.parent
        self._pipeline = Pipeline.load(folder)
        self._drift = DriftWindow(self._pipeline.reference)
        extra = (self.settings.parameters.extra or {}) if self.settings.parameters else {}
        self._log = Path(extra["log"]) if extra.get("log") else None
        self._blocklist = Path(extra["blocklist"]) if extra.get("blocklist") else None
        self._blocked, self._blocklist_mtime = set(), None
        floor = extra.get("fail_below_ink")
        self._fail_below_ink = None if floor is None else float(floor)
        # Warm up: the first drift test imports scipy (about a second), which the first request must not wait for.
        DriftWindow(self._pipeline.reference, size=2, every=1).update(self._pipeline.reference[:2])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        extra = (payload.parameters.model_extra or {}) if payload.parameters else {}
        record = {"request_id": payload.id, "client": str(extra.get("client", "anonymous"))[:100],
                  "t": float(extra.get("t", -1)), "version": self.version, "wall": time.time()}
        if record["client"] in self._blocked_clients():
            self._write({**record, "status": 403})
            raise MLServerError(f"client {record['client']!r} is blocked", status_code=403)
        rows = self._decode(payload)
        try:
            out = chain(self._pipeline, self._drift, rows, fail_below_ink=self._fail_below_ink)
        except ServerBug as e:
            self._write({**record, "status": 500})
            raise MLServerError(str(e), status_code=500) from None
        self._write({**record, "status": 200, **{k: v[0] if isinstance(v, list) else v for k, v in out.items()}})
        outputs = {
            "predict": np.asarray(out["predict"], np.int64),
            "confidence": np.asarray(out["confidence"]),
            "outlier_score": np.asarray(out["outlier_score"]),
            "is_outlier": np.asarray(out["is_outlier"], bool),
            "adversarial_score": np.asarray(out["adversarial_score"]),
            "is_adversarial": np.asarray(out["is_adversarial"], bool),
            "drift_p": np.full(len(rows), out["drift_p"]),
        }
        return InferenceResponse(
            id=payload.id, model_name=self.name, model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, value.reshape(-1, 1)) for name, value in outputs.items()],
        )

    def _blocked_clients(self) -> set:
        """The blocklist file's clients, read again only when the file changes."""
        if self._blocklist is None or not self._blocklist.exists():
            return set()
        mtime = self._blocklist.stat().st_mtime_ns
        if mtime != self._blocklist_mtime:
            self._blocked, self._blocklist_mtime = set(json.loads(self._blocklist.read_text())), mtime
        return self._blocked

    def _write(self, record: dict) -> None:
        if self._log is not None:
            with self._log.open("a") as log:  # one line per request, whole: the replay reads it as it grows
                log.write(json.dumps(record) + "\n")

    def _decode(self, payload: InferenceRequest) -> np.ndarray:
        if len(payload.inputs) != 1:
            raise InferenceError(f"send one input tensor of rows of 64 pixels, not {len(payload.inputs)} inputs")
        tensor = payload.inputs[0]
        if tensor.datatype not in ("FP32", "FP64"):
            raise InferenceError(f"pixels must be FP32 or FP64, not {tensor.datatype}")
        rows = np.asarray(NumpyRequestCodec.decode_request(payload), dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != 64:
            raise InferenceError(f"expected shape [-1, 64] (rows of 64 pixels), got {list(tensor.shape)}")
        if not np.isfinite(rows).all():
            raise InferenceError("pixels must be finite numbers (no NaN or infinity)")
        return rows
