"""Serve an ONNX classifier with NVIDIA Triton through PyTriton, with Triton's dynamic batching (lab 10).

PyTriton binds a Python function as the model, so Triton runs it in its Python backend, and the function calls
onnxruntime. This is not Triton's native ONNX Runtime backend (a model repository whose config.pbtxt names
`backend: "onnxruntime"`, run in C++ without Python): what this measures is Triton's front end and batching
around Python code.

    python triton_serve.py MODEL.onnx NAME HTTP_PORT GRPC_PORT METRICS_PORT MAX_BATCH QUEUE_DELAY_US

Run it as a process of its own: PyTriton imports tritonclient's gRPC module, whose protobuf messages have the
same names as MLServer's (`inference.ServerLiveRequest`, ...), and protobuf refuses a second definition in one
process. It binds 127.0.0.1, prints "ready" when Triton serves the model, and stops when its standard input
closes. Triton itself (the `tritonserver` binary inside the wheel) speaks the Open Inference Protocol, so any V2
client can call it; the model's inputs and outputs are named as MLServer's scikit-learn runtime names them.
"""

import sys

import numpy as np
import onnxruntime
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main(path, name, http_port, grpc_port, metrics_port, max_batch, delay_us):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name

    @batch
    def infer(features):  # Triton hands over the rows of a whole dynamic batch at once
        label, probabilities = session.run(None, {feed: features.astype(np.float32)})
        return {"predict": label.reshape(-1, 1).astype(np.int64), "predict_proba": probabilities}

    config = TritonConfig(http_address="127.0.0.1", http_port=int(http_port), grpc_address="127.0.0.1",
                          grpc_port=int(grpc_port), metrics_port=int(metrics_port))
    with Triton(config=config) as triton:
        width = session.get_inputs()[0].shape[1]
        triton.bind(model_name=name, infer_func=infer,
                    inputs=[Tensor(name="features", dtype=np.float64, shape=(width,))],
                    outputs=[Tensor(name="predict", dtype=np.int64, shape=(1,)),
                             Tensor(name="predict_proba", dtype=np.float32, shape=(-1,))],
                    config=ModelConfig(max_batch_size=int(max_batch),
                                       batcher=DynamicBatcher(max_queue_delay_microseconds=int(delay_us))))
        triton.run()
        print("ready", flush=True)
        sys.stdin.read()  # until the notebook closes our standard input


if __name__ == "__main__":
    main(*sys.argv[1:])
