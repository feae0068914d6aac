"""An MLServer runtime that answers with class names and probabilities.

MLServer imports this module from the model's folder; `model-settings.json`
names the artefact (`parameters.uri`) and the class names
(`parameters.extra.class_names`), and may name the class whose share of the rows
the metrics watch (`parameters.extra.watched_class`, by default the first).
"""

import joblib
import mlserver
import numpy as np
import pandas as pd
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec, StringCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

OUTPUTS = ("label", "probabilities")


class DiagnosisModel(MLModel):
    """A scikit-learn classifier trained on a DataFrame, served with readable outputs."""

    async def load(self) -> bool:
        self._model = joblib.load(await get_model_uri(self.settings))
        self._columns = list(self._model.feature_names_in_)
        extra = self.settings.parameters.extra
        self._class_names = np.asarray(extra["class_names"])
        self._max_rows = int(extra.get("max_rows", 1000))  # the largest batch a request may carry
        self._watched = str(extra.get("watched_class", self._class_names[0]))
        # Two counts per request, not a share: the ratio of their sums weighs every row once.
        mlserver.register("diagnosis_rows", "Rows per request")
        mlserver.register("diagnosis_watched_rows", "Rows per request labelled with the watched class")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        wanted = self._wanted_outputs(payload)
        features = self._features(payload)
        probabilities = self._model.predict_proba(features)
        labels = self._class_names[probabilities.argmax(axis=1)]
        mlserver.log(diagnosis_rows=len(labels), diagnosis_watched_rows=int(np.sum(labels == self._watched)))
        outputs = []
        if "label" in wanted:
            outputs.append(StringCodec.encode_output("label", labels.tolist()))
        if "probabilities" in wanted:
            outputs.append(NumpyCodec.encode_output("probabilities", probabilities))
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)

    def _wanted_outputs(self, payload: InferenceRequest) -> list[str]:
        """The outputs the request asks for; both when it names none."""
        if not payload.outputs:
            return list(OUTPUTS)
        wanted = [output.name for output in payload.outputs]
        unknown = sorted(set(wanted) - set(OUTPUTS))
        if unknown:
            raise InferenceError(f"unknown output {unknown[0]!r}; this model offers {list(OUTPUTS)}")
        return wanted

    def _features(self, payload: InferenceRequest) -> pd.DataFrame:
        """The request's rows as a DataFrame with the model's columns, in training order."""
        decoded = self.decode_request(payload, default_codec=NumpyRequestCodec)
        if isinstance(decoded, pd.DataFrame):
            return decoded[self._columns]
        return pd.DataFrame(decoded, columns=self._columns)
