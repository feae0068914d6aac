"""DiagnosisModel that refuses bad requests with a 400 that says what to fix."""

import math

import numpy as np
import pandas as pd
from mlserver.codecs import NumpyRequestCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest

from diagnosis_runtime import DiagnosisModel

# The datatypes that carry the features without loss: MLServer casts the values to the declared type,
# so fractions sent as INT8 would arrive truncated.
FLOATS = ("FP32", "FP64")


class StrictDiagnosisModel(DiagnosisModel):
    def _features(self, payload: InferenceRequest) -> pd.DataFrame:
        ### BEGIN SOLUTION
        for tensor in payload.inputs:
            if tensor.datatype not in FLOATS:
                raise InferenceError(f"input {tensor.name!r} is {tensor.datatype}; send FP64 (or FP32) numbers")
            shape = list(tensor.shape)
            if any(size < 0 for size in shape):  # numpy's reshape would guess a -1
                raise InferenceError(f"input {tensor.name!r} has shape {shape}; a request states every size "
                                     "(0 or more); -1 is for metadata")
            try:
                nested = list(np.shape(tensor.data.root))
            except ValueError:  # rows of different lengths
                raise InferenceError(f"input {tensor.name!r} holds rows of different lengths") from None
            if len(nested) > 1 and nested != shape:  # reshaping would shuffle the values across features
                raise InferenceError(f"input {tensor.name!r} is nested as {nested} but has shape {shape}; send the "
                                     "data flat, or nested as its shape")
            if math.prod(nested) != math.prod(shape):
                raise InferenceError(f"input {tensor.name!r} holds {math.prod(nested)} values; its shape {shape} "
                                     f"needs {math.prod(shape)}")
        try:
            decoded = self.decode_request(payload, default_codec=NumpyRequestCodec)
        except Exception as error:  # a codec's complaint about the tensors is the client's to fix
            raise InferenceError(f"cannot decode the request: {error}") from None
        if isinstance(decoded, pd.DataFrame):
            missing = [c for c in self._columns if c not in decoded.columns]
            if missing:
                raise InferenceError(f"missing columns {missing[:3]}; send all {len(self._columns)} columns")
            extra = [str(c) for c in decoded.columns if c not in self._columns]
            if extra:
                raise InferenceError(f"unexpected columns {extra[:3]}; send only the model's {len(self._columns)}")
            frame = decoded[self._columns]
        else:
            array = np.asarray(decoded)
            if array.ndim != 2 or array.shape[1] != len(self._columns):
                raise InferenceError(f"expected shape [rows, {len(self._columns)}], got {list(array.shape)}")
            frame = pd.DataFrame(array, columns=self._columns)
        if not 1 <= len(frame) <= self._max_rows:
            raise InferenceError(f"send 1 to {self._max_rows} rows per request, not {len(frame)}")
        values = frame.to_numpy()  # numbers: the datatypes were checked first
        bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if bad_rows.size:
            raise InferenceError(f"rows {bad_rows[:5].tolist()} contain NaN or infinity; send finite numbers")
        return frame
        ### END SOLUTION
