"""Importing Keras (and TensorFlow) fast and without TensorFlow's harmless start-up chatter.

TensorFlow turns its oneDNN kernels on by default only on CPUs with newer AVX-512
features; elsewhere (an AVX2 AMD EPYC, say) Conv3D falls back to plain GEMM and trains
6x slower. ``import_keras`` therefore sets ``TF_ENABLE_ONEDNN_OPTS=1`` unless the user
set it.

The ``tensorflow`` wheel prints, from C++ and before its logging is set up, that it found
no CUDA driver and which CPU features it uses. ``import_keras`` captures what is written
to file descriptor 2 while TensorFlow loads and looks for devices, drops those known
lines, and writes everything else back to stderr, so real errors still show.

Threads: TensorFlow and ONNX Runtime use one thread per core by default;
``$PROFILER_THREADS`` sets both (``compute_threads``).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

HARMLESS = re.compile(
    r"absl::InitializeLog|cudart_stub|cuda_platform|cuInit|cuda drivers|cpu_feature_guard|"
    r"oneDNN custom operations|rebuild TensorFlow with the appropriate compiler flags|"
    r"TF-TRT Warning|computation_placer|Unable to register cu(DNN|FFT|BLAS) factory|"
    r"This TensorFlow binary is optimized|Created TensorFlow Lite XNNPACK delegate|"
    r"fully_quantize: \d|Saved artifact at"
)
_loaded = False


@contextlib.contextmanager
def quiet_stderr():
    """Capture what C++ code writes to file descriptor 2; write back all but ``HARMLESS`` lines."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines():
                if line.strip() and not HARMLESS.search(line):
                    print(line, file=sys.stderr)


def compute_threads() -> int:
    """Threads for TensorFlow's and ONNX Runtime's kernels: ``$PROFILER_THREADS``, 0 = their default.

    Their default is one per core, which is right on a machine of its own; set it lower
    to leave cores to other work (decoding processes, a second job).
    """
    value = os.environ.get("PROFILER_THREADS", "").strip()
    try:
        return max(0, int(value)) if value else 0
    except ValueError:
        raise SystemExit(f"PROFILER_THREADS must be a whole number, not {value!r}") from None


def import_keras():
    """Import and return ``keras``; with TensorFlow as backend, quietly, devices initialised."""
    global _loaded
    if not _loaded:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
        with quiet_stderr():
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                threads = compute_threads()
                if threads:
                    tf.config.threading.set_intra_op_parallelism_threads(threads)
                    tf.config.threading.set_inter_op_parallelism_threads(threads)
                tf.config.list_physical_devices()
        _loaded = True
    import keras

    return keras
