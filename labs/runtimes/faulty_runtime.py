"""DiagnosisModel with faults on purpose, for rollouts that must catch them (lab 04).

`parameters.extra` of `model-settings.json` may set, besides DiagnosisModel's own entries:
- `delay`: seconds every request waits before it is answered (a slow version);
- `error_rate`: the share of requests that fail with a 500 (a broken version), drawn with `seed`.
With neither, it answers exactly as DiagnosisModel does.
"""

import asyncio
import random

from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse

from diagnosis_runtime import DiagnosisModel


class FaultyDiagnosisModel(DiagnosisModel):
    async def load(self) -> bool:
        extra = self.settings.parameters.extra
        self._delay = float(extra.get("delay", 0))
        self._error_rate = float(extra.get("error_rate", 0))
        if self._delay < 0 or not 0 <= self._error_rate <= 1:
            raise ValueError(f"delay must be >= 0 and error_rate from 0 to 1, not {self._delay}, {self._error_rate}")
        self._random = random.Random(extra.get("seed", 0))
        return await super().load()

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        if self._delay:
            await asyncio.sleep(self._delay)  # waits without blocking the worker's other requests
        if self._random.random() < self._error_rate:
            raise MLServerError("injected failure (error_rate in model-settings.json)", status_code=500)
        return await super().predict(payload)
