"""The interface every model family implements, and what prediction asks of it.

A *family* is one way of turning a user's image files into a model's input: the paper's
3D CNNs read a volume of decoded images (``volumes``), the set model reads the set of
the images' embeddings from a frozen encoder (``sets``). The trainer, the predictor,
``evaluate`` and the benchmarks call only these methods, so adding a family (an adapted
encoder, a multimodal reader) is one new module registered in ``profiler.families``.

Training data (a prepared ``Cache``, an ``EmbeddedData``) offers ``len``,
``labels(trait)``, ``has_truth`` and ``root``; the rest is the family's business.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class Reader(ABC):
    """A trained model's view of users at prediction time: files in, model inputs out.

    ``max_images`` is the most images one model input holds; ``fills`` says whether a
    user with fewer is filled up to it (the result row flags such users); ``processes``
    says whether featurizing uses decoding processes (a pool the predictor may share).
    """

    max_images: int
    fills: bool = False
    processes: bool = False

    @abstractmethod
    def featurize(self, users: list, tta: int, *, workers: int = 1, pool=None) -> list:
        """Each user's usable images, read as the model needs them (decoded or embedded).

        Each item has ``user_id``, ``count`` (usable images), ``used`` and ``skipped``.
        """

    @abstractmethod
    def inputs(self, user, tta: int, seed: int) -> np.ndarray:
        """One user's model inputs: one, or ``tta`` random choices of their images."""

    @abstractmethod
    def ablations(self, user, drops: list[tuple[int, ...]] | None = None) -> tuple[np.ndarray, list[str]]:
        """For explanations: the user's deterministic model input with the images at each of
        ``drops`` taken out (positions in the order of the names returned, the files' names);
        by default the whole input, then one input without each image in turn."""

    def close(self) -> None:
        """Release what the reader holds open (a cache file)."""


class Family(ABC):
    """One model family: how it reads a dataset, draws batches, builds and reads models."""

    #: the family's name
    name: str
    #: the ``TrainConfig.model`` values (and saved models' ``variant``) it serves
    models: tuple[str, ...]

    @abstractmethod
    def training_data(self, source: Path, config, *, cache_dir: Path | None = None, store=None,
                      workers: int | None = None, allow_missing: bool = False, progress: bool = True):
        """The labelled dataset at ``source`` in the form this family trains on.

        ``cache_dir`` is where images are prepared, ``store`` the embedding cache (a
        path or an ``EmbeddingStore``); each family uses what it needs.
        """

    @abstractmethod
    def accepts(self, data) -> bool:
        """Whether ``data`` is training data of this family."""

    def fit_config(self, config, data):
        """``config`` with what ``data`` decided recorded in it (image size, say)."""
        return config

    @abstractmethod
    def build(self, config, data=None, positions: np.ndarray | None = None):
        """A new model for ``config``; ``data`` and the training ``positions`` where it needs them."""

    def split(self, model, data, positions: np.ndarray):
        """``(fitted, data)``: the model the optimiser fits and the data it reads.

        By default the whole model on the data as given; a family whose model starts
        with a stage training never changes computes that stage once here.
        """
        return model, data

    @abstractmethod
    def batch(self, data, chosen: np.ndarray, config, rng: np.random.Generator | None) -> np.ndarray:
        """The model inputs of the users at ``chosen``; ``rng`` draws the augmentation
        (None: the fixed, deterministic inputs used for validation)."""

    @abstractmethod
    def input_spec(self, data, config):
        """The ``tf.TensorSpec`` of a batch of inputs."""

    def runner(self, model):
        """``run(chunk) -> (outputs, items)``: the model's outputs (a dict per trait) for a chunk
        of inputs, and each input's items for the out-of-distribution score (``profiler.ood``),
        one array of rows per input. By default a user's items are the pooled vector its model
        reads before the heads (the layer named "pool")."""
        from profiler.backend import import_keras
        from core.labels import TRAITS

        keras = import_keras()
        both = keras.Model(model.inputs, [model.get_layer(t).output for t in TRAITS] + [model.get_layer("pool").output])

        def run(chunk):
            *heads, pooled = both.predict_on_batch(chunk)
            pooled = np.asarray(pooled).reshape(len(chunk), 1, -1)
            return dict(zip(TRAITS, heads)), list(pooled)
        return run

    def ood_train_items(self, model, data, positions: np.ndarray, config) -> np.ndarray:
        """The training users' items (rows) for ``profiler.ood.fit``: by default each user's
        items from ``runner``, on the fixed (validation-style) inputs."""
        from profiler.batching import padded_chunks

        run, rows = self.runner(model), []
        for i in range(0, len(positions), config.batch_size):
            x = self.batch(data, positions[i:i + config.batch_size], config, None)
            for chunk, n_real in padded_chunks(x, config.batch_size):
                rows.extend(run(chunk)[1][:n_real])
        return np.concatenate(rows)

    def finish(self, model, data, positions: np.ndarray, config):
        """The final model from the kept, calibrated checkpoint ``model``, once the validation
        users' part (calibration, the decision record) is done; ``positions``: every user of
        the training data. By default the checkpoint itself."""
        return model

    @abstractmethod
    def reader(self, info: dict, *, name: str = "model", encoder=None, store=None, model=None) -> Reader:
        """The ``Reader`` for a trained model described by ``info`` (``models.io.model_info``);
        ``model`` is the model itself (where it keeps what its reader needs: an adapted encoder)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {', '.join(self.models)}>"
