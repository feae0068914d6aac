"""A student's pickled model, loaded where the student's code already runs: in the check's MLServer.

Loading a pickle runs code (``__reduce__``), so a check never unpickles a student's file in its own process: in
the grader, that process holds the grading key and sends the submission's row. A check that needs the model
itself (02.runtime compares the served runtime with the model's own ``predict_proba``) serves it with
``PickledModel`` beside the student's runtime, in the same check server, which the grader runs in the
submission's sandbox (``labkit.serving.launcher``). There the pickle can do nothing that the student's runtime
cannot do already: change the answers of this one check.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec, StringCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse


class PickledModel(MLModel):
    """Answers with the pickled model's ``feature_names_in_`` (output ``columns``) and, for rows of that many
    features, its ``predict_proba`` on them as a DataFrame with those columns (output ``predict_proba``)."""

    async def load(self) -> bool:
        self._error = None
        try:
            import joblib

            self._model = joblib.load(self.settings.parameters.uri)
            self._columns = [str(c) for c in self._model.feature_names_in_]
        except Exception as e:  # the student's artefact, not the server, is at fault: the check says so
            self._error = f"{type(e).__name__}: {e}"
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        import pandas as pd

        if self._error is not None:
            raise InferenceError(f"the model could not be loaded ({self._error[:400]})")
        rows = np.asarray(NumpyRequestCodec.decode_request(payload), dtype=float)
        outputs = [StringCodec.encode_output("columns", self._columns)]
        if rows.ndim == 2 and rows.shape[1] == len(self._columns):
            probabilities = self._model.predict_proba(pd.DataFrame(rows, columns=self._columns))
            outputs.append(NumpyCodec.encode_output("predict_proba", np.asarray(probabilities, dtype=float)))
        return InferenceResponse(model_name=self.name, outputs=outputs)


def serve_artefact(repository: Path, artefact: Path) -> str:
    """Add ``artefact`` (a student's pickle, never loaded here) to ``repository`` as a ``PickledModel``; its
    model name, which no student's model has."""
    name = f"labkit-artefact-{uuid.uuid4().hex[:12]}"
    folder = Path(repository) / name
    folder.mkdir()
    settings = {"name": name, "implementation": f"{__name__}.PickledModel",
                "parameters": {"uri": str(Path(artefact).resolve())}}
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return name
