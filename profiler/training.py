"""Training a profiler model: one code path for every model family.

- **Data**: a ``tf.data`` pipeline over the family's training data (the memory-mapped
  image cache of the 3D CNNs, the image embeddings of the set model), whose batches the
  family builds (``profiler.families``), prefetched so the model does not wait. Each
  epoch's order, image choice and flips come from a random stream seeded by
  ``(seed, epoch)`` alone, so an epoch is the same whether the run was interrupted or not.
- **Loss**: categorical cross-entropy summed over the three heads (the paper's Eq. 1),
  computed from integer labels (``sparse_categorical_crossentropy``: the same value),
  with optional per-head weights and "balanced" per-class sample weights per head.
- **Validation**: a stratified share of the users (by occupation, the most skewed trait).
  After each epoch the model predicts it once; the checkpoint kept (``best.keras`` while
  the run lasts) is the one with the best mean macro-F over the three traits, computed
  with the evaluator's functions, not the best loss. Early stopping watches the same
  number. The callbacks doing this are Keras' own, composed (``profiler.callbacks``).
- **The model file**: once training ends, the kept checkpoint is calibrated on the
  validation users (``calibrate``) and made final by its family (``Family.finish``: the
  "latent" set model refills its bank with the validation users' images), and written
  as ``model.keras``; the checkpoint stays until the run is done, so a run killed on the
  way does all of it again on ``--resume`` (training again first where Keras has already
  dropped its backup) and writes the same model file.
- **Resume**: Keras' ``BackupAndRestore`` keeps the weights and optimizer state of the
  last finished epoch; ``RunState`` keeps what Keras does not (the random generators,
  the best score, the patience used up) beside it. A run killed mid-epoch restarts that
  epoch on ``--resume`` and ends with the same weights as an uninterrupted run.
- **Determinism**: every seed is set (``keras.utils.set_random_seed``) and TensorFlow's
  op determinism is enabled.
- **Many devices, many workers** (``distribute``): TensorFlow's own strategies.
  "mirrored" (``MirroredStrategy``) splits each batch over this machine's GPUs;
  "multiworker" (``MultiWorkerMirroredStrategy``, the cluster in ``TF_CONFIG``) runs the
  same command in every worker, each taking its share of every batch (the batch is
  drawn whole in each, so the random choices are one run's), the gradients summed
  across them. Worker 0 (the chief) writes RUN_DIR; the others write beside it in
  RUN_DIR/worker-N, removed when they finish.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ConfigError, DataError, RunStateError
from core.io import atomic_write_text
from core.labels import LABELS, TRAITS
from profiler.config import TrainConfig

log = logging.getLogger("profiler")

#: a run directory's files (``profiler.callbacks`` writes them)
STATE_FILE = "train_state.json"
BEST_FILE = "best.keras"  # the kept checkpoint while the run lasts (model.keras: the final model)
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
#: the ways a run may be spread over devices and machines (``distribution``)
DISTRIBUTE = ("none", "mirrored", "multiworker")


# --- data ------------------------------------------------------------------------------


def split_indices(data, val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation user positions, stratified by occupation where possible."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(data))
    if len(data) < 4:
        raise DataError(f"{data.root}: {len(data)} users are too few to train (need at least 4)")
    strata = data.labels("occupation")
    counts = np.bincount(strata)
    n_val = max(1, int(round(len(data) * val_share)))
    stratify = strata if counts[counts > 0].min() >= 2 and n_val >= len(np.unique(strata)) else None
    train, val = train_test_split(positions, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


def class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """"Balanced" weights n / (k * count) per class (k: classes present), 0 for absent ones."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


class EpochData:
    """Batches of one epoch, drawn by a stream seeded by (seed, epoch) alone.

    ``data`` is the family's training data; the family builds each batch's inputs.
    """

    def __init__(self, family, data, positions: np.ndarray, config: TrainConfig, *, train: bool,
                 shard: tuple[int, int] = (0, 1)):
        self.shard, self.shards = shard  # this worker takes rows shard, shard + shards, ... of each batch
        self.family = family
        self.data = data
        self.positions = positions
        self.config = config
        self.train = train
        self.start_epoch = 0
        self.calls = 0
        self.labels = {t: data.labels(t) for t in TRAITS}
        self.weights = {t: np.ones(len(data), np.float32) for t in TRAITS}
        if config.class_weight == "balanced":
            for t in TRAITS:
                per_class = class_weights(self.labels[t][positions], len(LABELS[t]))
                self.weights[t] = per_class[self.labels[t]].astype(np.float32)

    def __len__(self) -> int:
        return math.ceil(len(self.positions) / self.config.batch_size)

    def restart(self, epoch: int) -> None:
        """The next call of ``batches`` draws epoch ``epoch`` (0-based)."""
        self.start_epoch, self.calls = epoch, 0

    def batches(self):
        """Yield ``(inputs, labels, sample_weights)`` of the next epoch.

        Each call is one epoch, in order: Keras creates the next epoch's iterator (and
        tf.data starts prefetching it) before the epoch's callbacks run, so the epoch
        number is counted here rather than set from a callback.
        """
        epoch = self.start_epoch + self.calls
        self.calls += 1
        rng = np.random.default_rng([self.config.seed, epoch]) if self.train else None
        order = rng.permutation(self.positions) if self.train else self.positions
        size = self.config.batch_size
        for start in range(0, len(order), size):
            chosen = order[start:start + size]
            x = self.family.batch(self.data, chosen, self.config, rng)
            y = {t: self.labels[t][chosen] for t in TRAITS}
            w = {t: self.weights[t][chosen] for t in TRAITS}
            if self.shards > 1:  # drawn whole (the same random choices as one worker), then shared out
                mine = slice(self.shard, None, self.shards)
                x, y, w = x[mine], {t: v[mine] for t, v in y.items()}, {t: v[mine] for t, v in w.items()}
            yield x, y, w

    def dataset(self):
        """The batches as a prefetched ``tf.data.Dataset`` (re-drawn on each iteration)."""
        import tensorflow as tf

        signature = (
            self.family.input_spec(self.data, self.config),
            {t: tf.TensorSpec((None,), tf.int64) for t in TRAITS},
            {t: tf.TensorSpec((None,), tf.float32) for t in TRAITS},
        )
        data = tf.data.Dataset.from_generator(self.batches, output_signature=signature)
        data = data.apply(tf.data.experimental.assert_cardinality(len(self)))
        return data.prefetch(tf.data.AUTOTUNE)


# --- model and optimiser ---------------------------------------------------------------


def learning_rate(config: TrainConfig, steps_per_epoch: int):
    """The learning rate or schedule: constant, inverse-time (Keras 2 'decay') or cosine."""
    import keras

    if config.schedule == "inverse_time":
        return keras.optimizers.schedules.InverseTimeDecay(
            config.learning_rate, decay_steps=1, decay_rate=config.decay)
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=max(1, config.epochs * steps_per_epoch), alpha=0.01)
    return config.learning_rate


def compile_model(model, config: TrainConfig, steps_per_epoch: int) -> None:
    import keras

    lr = learning_rate(config, steps_per_epoch)
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(lr)
    elif config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(lr, weight_decay=config.weight_decay or 1e-4)
    else:
        optimizer = keras.optimizers.SGD(lr, momentum=0.9)
    model.compile(
        optimizer=optimizer,
        loss={t: "sparse_categorical_crossentropy" for t in TRAITS},
        loss_weights=dict(config.head_weights),
        metrics={t: ["sparse_categorical_accuracy"] for t in TRAITS},
    )


# --- the run ---------------------------------------------------------------------------


@functools.cache
def distribution(mode: str):
    """``(strategy, worker index, workers)`` for ``mode`` (one of ``DISTRIBUTE``); no strategy for "none".

    "multiworker" reads the cluster from ``TF_CONFIG`` (``{"cluster": {"worker": [host:port,
    ...]}, "task": {"type": "worker", "index": i}}``) and must be set up before TensorFlow
    runs anything else in the process: call this first (the CLI does); later calls return
    the same strategy.
    """
    if mode not in DISTRIBUTE:
        raise ConfigError(f"distribute must be one of {', '.join(DISTRIBUTE)}, not {mode!r}")
    if mode == "none":
        return None, 0, 1
    import tensorflow as tf

    if mode == "mirrored":
        return tf.distribute.MirroredStrategy(), 0, 1
    raw = os.environ.get("TF_CONFIG", "")
    try:
        spec = json.loads(raw)
        workers = spec["cluster"]["worker"]
        task = spec["task"]
        index = int(task["index"])
        if task.get("type", "worker") != "worker" or not isinstance(workers, list) or not 0 <= index < len(workers):
            raise ValueError("the task must be one of the cluster's workers")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError("--distribute multiworker reads the cluster from the environment variable TF_CONFIG, "
                          "e.g. {\"cluster\": {\"worker\": [\"host1:12345\", \"host2:12345\"]}, "
                          "\"task\": {\"type\": \"worker\", \"index\": 0}}; "
                          + ("it is not set" if not raw else f"it is not usable ({exc})")) from exc
    return tf.distribute.MultiWorkerMirroredStrategy(), index, len(workers)


def _distributed(strategy, data: EpochData):
    """The training batches as ``fit`` takes them: with several workers, each worker's own share
    as its replica's batch (``distribute_datasets_from_function``: not re-split by TensorFlow)."""
    if data.shards == 1:
        return data.dataset()
    return strategy.distribute_datasets_from_function(lambda context: data.dataset())


def _prebuild(model, strategy, data: EpochData) -> None:
    """Build ``model``'s metrics and optimizer in the strategy's scope from one local batch.

    Keras 3's ``fit`` would build them by reducing a distributed batch across the workers,
    which fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585); built here,
    ``fit`` has nothing left to build and skips that step.
    """
    x, y, w = next(iter(data.batches()))
    data.calls -= 1  # that draw was not an epoch
    with strategy.scope():
        model._symbolic_build(data_batch=(x, y, w))
        model.optimizer.build(model.trainable_variables)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


@contextlib.contextmanager
def _scalar_logs_across_workers(strategy):
    """While ``fit`` runs under ``MultiWorkerMirroredStrategy``: reduce the step's scalar logs
    with ``axis=None``. Keras 3 reduces them with ``axis=0``, which fails on scalars
    (keras-team/keras#20585); the values are the same, the shape is the fix."""
    from keras.src.backend.tensorflow import trainer

    original = trainer.reduce_per_replica

    def reduce(values, strategy_, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy_):
            from keras.src import tree

            return tree.map_structure(lambda v: strategy_.reduce("MEAN", v, axis=None), values)
        return original(values, strategy_, reduction)

    trainer.reduce_per_replica = reduce
    try:
        yield
    finally:
        trainer.reduce_per_replica = original


def set_determinism(seed: int) -> None:
    """Seed Python, NumPy and the backend; make TensorFlow's ops deterministic."""
    import keras

    keras.utils.set_random_seed(seed)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def train(data, run_dir: str | Path, config: TrainConfig, *, resume: bool = False,
          progress: bool = True, callbacks=(), distribute: str = "none") -> dict:
    """Train one model on ``data`` into ``run_dir``; return the summary.

    ``data`` is the training data of the model's family (``profiler.families``): a
    prepared ``Cache`` for Model 1 and 2, an ``EmbeddedData`` for the set model; the
    family's ``training_data`` makes it from a dataset folder.

    ``callbacks`` are extra Keras callbacks, run after the trainer's own (a test's
    interruption, a progress hook). ``distribute``: one of ``DISTRIBUTE`` (module docstring).
    """
    from profiler.backend import import_keras
    from profiler.families import family_of

    import_keras()
    strategy, shard, shards = distribution(distribute)
    requested_dir, requested_config = run_dir, config  # to start again from (a torn only backup)

    family = family_of(config.model)
    run_dir = Path(run_dir)
    if shard:  # not the chief: its own files, beside the chief's
        run_dir = run_dir / f"worker-{shard}"
    state_path = run_dir / STATE_FILE
    if state_path.is_file() and not resume:
        raise RunStateError(f"{run_dir}: a training run is already here; use --resume to continue "
                            "it, or another run directory")
    if resume and state_path.is_file() and json.loads(state_path.read_text()).get("done"):
        raise RunStateError(f"{run_dir}: this run has already finished")
    if not data.has_truth:
        raise DataError(f"{data.root}: training needs a dataset with a truth file")
    if not family.accepts(data):
        raise DataError(f"{data.root}: the {config.model} model ({family.name}) cannot train on "
                        f"{type(data).__name__}; make its data with its family's training_data")
    config = family.fit_config(config, data)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _run_lock(run_dir):  # held until the run ends, whichever way
        atomic_write_text(run_dir / "config.json", json.dumps(config.to_json(), indent=2) + "\n")
        set_determinism(config.seed)
        train_pos, val_pos = split_indices(data, config.val_share, config.seed)
        with strategy.scope() if strategy else contextlib.nullcontext():
            model = family.build(config, data, train_pos)
            fitted, fitted_data = family.split(model, data, train_pos)
            train_data = EpochData(family, fitted_data, train_pos, config, train=True, shard=(shard, shards))
            val_data = EpochData(family, fitted_data, val_pos, config, train=False)
            compile_model(fitted, config, len(train_data))
        if shards > 1:
            _prebuild(fitted, strategy, train_data)
        from profiler.callbacks import trainer_callbacks

        own, state = trainer_callbacks(run_dir, train_data, val_data, config, resume=resume, progress=progress,
                                       saved=model)
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr), (  # Keras' progress bar: stderr, not stdout
                    _scalar_logs_across_workers(strategy) if shards > 1 else contextlib.nullcontext()):
                fitted.fit(_distributed(strategy, train_data), epochs=config.epochs, callbacks=own + list(callbacks),
                           shuffle=False, verbose=1 if progress and sys.stderr.isatty() else 0)
        except OSError as exc:
            if resume and not state.restored:  # BackupAndRestore failed to read the only backup
                # killed while Keras wrote it, with none before: nothing of the run is safely kept, so
                # it starts again (deterministic: it ends with the weights an uninterrupted run has)
                log.warning("%s: the training backup cannot be read (%s): the run was killed while writing it "
                            "and there is no earlier one; training again from the start", run_dir / BACKUP_DIR, exc)
                shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
                state_path.unlink(missing_ok=True)
                return train(data, requested_dir, requested_config, progress=progress, callbacks=callbacks,
                             distribute=distribute)
            raise
        elapsed = time.perf_counter() - start
        from profiler.models.io import load_model, save_model

        save_model(model, run_dir / "last.keras")
        if progress:  # the set model's refilled bank takes about a minute at 3,500 users
            print("calibrating the kept epoch on the validation users and writing the final model", file=sys.stderr,
                  flush=True)
        kept = run_dir / BEST_FILE
        if not kept.is_file() and (run_dir / "model.keras").is_file():
            kept = run_dir / "model.keras"  # a run begun by an earlier version, which kept its checkpoint there
        best = load_model(kept)
        calibration = calibrate(best, family, data, val_pos, config, train_pos) if config.calibrate else None
        save_model(family.finish(best, data, np.union1d(train_pos, val_pos), config), run_dir / "model.keras")
        summary = _summary(run_dir, config, model, len(train_pos), len(val_pos), elapsed)
        summary["calibration"] = calibration
        summary["distribute"] = {"mode": distribute, "workers": shards,
                                 "replicas": strategy.num_replicas_in_sync if strategy else 1}
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        from profiler.plots import training_curves

        training_curves(run_dir / HISTORY_FILE, run_dir / "curves.png", title=f"{config.model} ({config.preset})",
                        weighted=config.class_weight != "none")
        # done only once every output is written: a run killed before this point is resumed (and
        # ends the same), one killed after it is whole
        state.finish()
        shutil.rmtree(run_dir / BACKUP_DIR, ignore_errors=True)
        (run_dir / BEST_FILE).unlink(missing_ok=True)
        (run_dir / LOCK_FILE).unlink(missing_ok=True)  # still held: a process that opened it now is refused
        if shard:  # a worker's own files: the chief's RUN_DIR has the run
            shutil.rmtree(run_dir, ignore_errors=True)
        return summary


#: the run directories this process trains into (``_run_lock``): a torn backup's fresh start
#: trains again inside the lock it holds
_LOCKED: set[str] = set()
LOCK_FILE = "train.lock"


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """Hold ``RUN_DIR/train.lock`` (an exclusive ``flock``) while training into ``run_dir``: a
    second process training there at once (a job started twice, a scheduler's restart while
    the first still runs) would write over the first one's checkpoints. The lock goes with
    its process, however it ends, so a killed run leaves none held; the file is removed once
    the run is done. Where ``fcntl`` is missing (not POSIX) nothing is locked."""
    key = str(run_dir.resolve())
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if key in _LOCKED or fcntl is None:
        yield
        return
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunStateError(f"{run_dir}: another process is training here now (it holds {path}); wait "
                                "for it to end, or choose another run directory") from None
        _LOCKED.add(key)
        try:
            yield
        finally:
            _LOCKED.discard(key)
    finally:
        os.close(fd)


def calibrate(best, family, data, positions: np.ndarray, config: TrainConfig,
              train_positions: np.ndarray) -> dict:
    """Fit each head's temperature on the users at ``positions`` (the validation split) from
    their probabilities as the kept model reads them (``_validation_outputs``: the kept
    checkpoint ``best``, loaded, or, where ``finish`` refills the set model's bank, the
    checkpoint finished with the other half of them) (shifted to the training users' class
    shares first, for a model trained with balanced class weights: ``profiler.calibration``),
    and store them in ``best``, with what the decision rules need
    (``profiler.decisions.record``: the training users' class shares, the validation users'
    calibrated probabilities and labels) and the reference of the out-of-distribution score
    (``profiler.ood``: the training users' items, the validation users' scores).

    Returns per trait the temperature and the log loss, Brier score and ECE before and after.
    """
    from profiler.calibration import calibrate as calibrate_probs
    from profiler.calibration import calibration_scores, fit_temperature, shift_priors

    probs, items = _validation_outputs(best, family, data, positions, config, train_positions)
    from profiler.decisions import class_shares, record

    shifted = config.class_weight == "balanced"  # back to the real class shares (profiler.calibration)
    report, temperatures, calibrated = {}, {}, {}
    for t in TRAITS:
        p, truth = probs[t], data.labels(t)[positions]
        shares = class_shares(data.labels(t)[train_positions], len(best.labels[t])) if shifted else None
        temperatures[t] = fit_temperature(shift_priors(p, shares), truth)
        calibrated[t] = calibrate_probs(p, temperatures[t], shares)
        report[t] = {"temperature": temperatures[t], "before": calibration_scores(p, truth),
                     "after": calibration_scores(calibrated[t], truth)}
    best.temperatures = temperatures
    best.decisions = record(calibrated, {t: data.labels(t)[positions] for t in TRAITS},
                            {t: data.labels(t)[train_positions] for t in TRAITS}, best.labels,
                            class_weight=config.class_weight, shifted=shifted)
    from profiler import ood

    best.ood = ood.fit(family.ood_train_items(best, data, train_positions, config), items, seed=config.seed)
    return report


def _outputs(model, family, data, positions: np.ndarray, config: TrainConfig) -> tuple[dict, list]:
    """``model``'s raw probabilities per trait for the users at ``positions``, and their items."""
    from profiler.batching import padded_chunks

    run = family.runner(model)
    probs, items = {t: [] for t in TRAITS}, []
    for i in range(0, len(positions), config.batch_size):
        x = family.batch(data, positions[i:i + config.batch_size], config, None)
        for chunk, n_real in padded_chunks(x, config.batch_size):  # one shape for every call
            out, chunk_items = run(chunk)
            items.extend(chunk_items[:n_real])
            for t in TRAITS:
                probs[t].append(np.asarray(out[t])[:n_real])
    return {t: np.concatenate(probs[t]) for t in TRAITS}, items


def _validation_outputs(best, family, data, positions: np.ndarray, config: TrainConfig,
                        train_positions: np.ndarray) -> tuple[dict, list]:
    """The validation users' outputs (``_outputs``) to fit the calibration and the decision
    rules on: where ``family.finish`` changes the kept model (the set model refills its bank
    with the validation users' images too) and ``calibrate_refilled``, each half of them (a
    seeded split) is read by ``best`` finished with the training users and the *other* half,
    so a user's own images are never in the bank that reads it (cross-fitting) and the
    probabilities are like those the kept model gives a new user; otherwise by ``best``."""
    if config.calibrate_refilled and len(positions) > 1:
        order = np.random.default_rng(config.seed).permutation(len(positions))
        halves = [np.sort(order[0::2]), np.sort(order[1::2])]  # indices into ``positions``
        outputs = []
        for k, half in enumerate(halves):
            finished = family.finish(best, data, np.union1d(train_positions, np.delete(positions, half)), config)
            if finished is best:  # nothing refilled: the kept model reads as ``best`` does
                break
            log.info("calibration: validation half %d of 2 is read through that model (finished with the "
                     "training users and the other half)", k + 1)
            outputs.append(_outputs(finished, family, data, positions[half], config))
        else:
            back = np.argsort(np.concatenate(halves))  # the halves' rows back in ``positions``' order
            items = [item for _, got in outputs for item in got]
            return ({t: np.concatenate([out[t] for out, _ in outputs])[back] for t in TRAITS},
                    [items[i] for i in back])
    return _outputs(best, family, data, positions, config)


def _summary(run_dir: Path, config: TrainConfig, model, n_train: int, n_val: int, elapsed: float) -> dict:
    """The run in figures, from its history: the best epoch (the first with the best
    validation mean macro-F, the one the checkpoint holds), its scores, the cost."""
    rows = pd.read_csv(run_dir / HISTORY_FILE)
    best = rows.loc[rows["val_mean_macro_f"].idxmax()]
    seconds = rows["seconds"].to_numpy()
    from profiler.models.flops import flops_per_user

    return {
        "model": config.model, "preset": config.preset, "epochs_run": len(rows),
        "best_epoch": int(best["epoch"]),
        "validation": {t: {"macro_f": float(best[f"val_macro_f_{t}"]), "accuracy": float(best[f"val_acc_{t}"])}
                       for t in TRAITS} | {"mean_macro_f": float(best["val_mean_macro_f"])},
        "train_users": n_train, "val_users": n_val,
        "seconds_per_epoch": float(np.median(seconds)),
        "train_users_per_second": float(n_train / np.median(seconds)),
        "wall_seconds_this_session": elapsed,
        "parameters": int(model.count_params()),
        "trained_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
        "flops_per_user": flops_per_user(model),
    }
