"""An MLServer runtime that serves an ONNX model with onnxruntime, answering as MLServer's scikit-learn runtime does.

`model-settings.json` names the `.onnx` file in `parameters.uri`. A classifier converted by skl2onnx with
`zipmap=False` has two outputs, the labels and a probability matrix; they are served as `predict` and
`predict_proba`, so a client of `mlserver_sklearn.SKLearnModel` works unchanged. `parameters.extra.threads`
sets onnxruntime's threads per call (default 1: a server runs several calls at once).
"""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, NumpyRequestCodec
from mlserver.errors import InferenceError, MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, RequestOutput
from mlserver.utils import get_model_uri

OUTPUTS = ("predict", "predict_proba")


class OnnxModel(MLModel):
    async def load(self) -> bool:
        import onnxruntime  # here, not at the top: MLServer's main process imports this module too

        uri = await get_model_uri(self._settings, wellknown_filenames=["model.onnx"])
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(extra.get("threads", 1))
        try:
            self._session = onnxruntime.InferenceSession(uri, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # a missing or broken file: one clear line in the server's log
            raise MLServerError(f"cannot load the ONNX model {uri}: {e}") from e
        [self._input] = self._session.get_inputs()
        self._outputs = dict(zip(OUTPUTS, (o.name for o in self._session.get_outputs()), strict=False))
        self._width = self._input.shape[1] if isinstance(self._input.shape[1], int) else None
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        wanted = [o.name for o in payload.outputs or [RequestOutput(name="predict")]]
        unknown = [name for name in wanted if name not in self._outputs]
        if unknown:
            raise InferenceError(f"{self.name} has the outputs {list(self._outputs)}; {unknown} was requested")
        rows = np.asarray(self.decode_request(payload, default_codec=NumpyRequestCodec))
        if rows.ndim != 2 or (self._width is not None and rows.shape[1] != self._width):
            raise InferenceError(f"{self.name} takes rows of {self._width} features; got shape {list(rows.shape)}")
        if not np.issubdtype(rows.dtype, np.number):
            raise InferenceError(f"{self.name} takes numbers; got {rows.dtype}")
        # The converted graph computes in float32, as most ONNX models do.
        feed = {self._input.name: rows.astype(np.float32)}
        results = self._session.run([self._outputs[name] for name in wanted], feed)
        outputs = [self.encode(np.asarray(y), RequestOutput(name=name), default_codec=NumpyCodec)
                   for name, y in zip(wanted, results, strict=True)]
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=outputs)
