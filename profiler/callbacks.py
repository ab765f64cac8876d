"""The trainer's callbacks: Keras' own, composed, plus what Keras does not keep.

``ValidationScores`` predicts the validation users after each epoch and writes their
per-head losses, macro-F and accuracy, the mean macro-F (``val_mean_macro_f``) and the
epoch's seconds into the shared ``logs``. The stock callbacks read that value:
``BestCheckpoint`` (``ModelCheckpoint`` with ``mode="max"``, saving atomically),
``EarlyStopping`` and ``HistoryCSV`` (``CSVLogger`` with epochs counted from 1).
``BackupAndRestore`` keeps the weights and optimizer state of the last finished epoch;
``RunState`` keeps, per epoch, what Keras does not restore (the random generators'
states, the best score and the patience used up) and puts them back on ``--resume``.
``EpochLine`` prints one line per epoch.

Order matters in ``trainer_callbacks``: the scores come first (the others read them),
the run state is written before the backup of the same epoch, so a kill between the two
re-runs that epoch (deterministically) rather than losing it.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import RunStateError
from core.io import atomic_write_text
from core.labels import TRAITS
from profiler.backend import import_keras
from profiler.training import BACKUP_DIR, BEST_FILE, HISTORY_FILE, STATE_FILE

keras = import_keras()

MONITOR = "val_mean_macro_f"


class ValidationScores(keras.callbacks.Callback):
    """Scores the validation users after each epoch into ``logs`` (see the module docstring).

    ``val`` is the validation ``EpochData``; ``head_weights`` weigh the heads' losses as
    training does.
    """

    def __init__(self, val, head_weights: dict[str, float]):
        super().__init__()
        self.val = val
        self.head_weights = head_weights
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        from core.metrics import trait_scores

        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self.started
        probs = {t: [] for t in TRAITS}
        for x, _, _ in self.val.batches():
            out = self.model(x, training=False)
            for t in TRAITS:
                probs[t].append(np.asarray(out[t]))
        scores = {"seconds": seconds}
        fs, val_loss = [], 0.0
        for t in TRAITS:
            p = np.concatenate(probs[t])
            truth = self.val.labels[t][self.val.positions]
            loss = float(-np.mean(np.log(np.clip(p[np.arange(len(truth)), truth], 1e-7, 1))))
            measured = trait_scores(truth, p.argmax(axis=1), t)
            scores |= {f"val_loss_{t}": loss, f"val_macro_f_{t}": measured["F"], f"val_acc_{t}": measured["Acc"]}
            val_loss += self.head_weights[t] * loss
            fs.append(measured["F"])
        scores |= {"val_loss": val_loss, MONITOR: float(np.mean(fs))}
        logs.update(scores)


class _AtomicSave:
    """A model whose ``save`` writes atomically (``models.io.save_model``): a kill while
    saving leaves the previous file whole."""

    def __init__(self, model):
        self._model = model

    def save(self, filepath, overwrite=True):
        from profiler.models.io import save_model

        save_model(self._model, filepath)

    def __getattr__(self, name):
        return getattr(self._model, name)


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` of the best ``val_mean_macro_f`` (mode max), saved atomically.

    ``saved`` is the model written, when it is not the one being fitted (a model whose
    fixed first stage is computed once: its heads are the fitted model's layers).
    """

    def __init__(self, path: Path, saved=None):
        super().__init__(str(path), monitor=MONITOR, mode="max", save_best_only=True)
        self.saved = saved

    def set_model(self, model):
        super().set_model(_AtomicSave(self.saved if self.saved is not None else model))


class HistoryCSV(keras.callbacks.CSVLogger):
    """``CSVLogger`` whose epochs count from 1, as the summary's do, and that resumes cleanly.

    It appends to the file of a resumed run, but first drops the rows of epochs that
    will run again (a kill after the row was written but before the epoch's backup).
    The file is opened at the first epoch, when ``BackupAndRestore`` has decided which.
    """

    def __init__(self, path: Path):
        super().__init__(str(path), append=True)
        self.path = Path(path)
        self.opened = False

    def on_train_begin(self, logs=None):
        self.opened = False

    def on_epoch_begin(self, epoch, logs=None):
        if self.opened:
            return
        if self.path.is_file() and self.path.stat().st_size:
            rows = pd.read_csv(self.path)
            if len(rows) and rows["epoch"].max() > epoch:
                atomic_write_text(self.path, rows[rows["epoch"] <= epoch].to_csv(index=False))
        super().on_train_begin()
        self.opened = True

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class RunState(keras.callbacks.Callback):
    """What Keras does not restore, saved per epoch in ``train_state.json`` and put back on resume.

    After each epoch: the random generators' states (dropout), the best monitored value
    and the early-stopping wait. ``restore`` (called by ``Resume``, after
    ``BackupAndRestore`` chose the epoch to start from) restarts the data stream at that
    epoch and puts those values back into the model, the checkpoint and early stopping.
    """

    def __init__(self, run_dir: Path, data, checkpoint: BestCheckpoint, stopping=None, *, resume: bool):
        super().__init__()
        self.path = run_dir / STATE_FILE
        self.data, self.checkpoint, self.stopping = data, checkpoint, stopping
        self.restored = False  # set once the run state is back (so the backup was read)
        self.state = {"epochs": {}, "done": False}
        if resume and self.path.is_file():
            self.state = json.loads(self.path.read_text())

    def restore(self) -> None:
        epoch = int(getattr(self.model, "_initial_epoch", 0) or 0)
        self.data.restart(epoch)
        self.restored = True
        if not epoch:
            return
        saved = self.state["epochs"].get(str(epoch))
        if saved is None:
            raise RunStateError(f"{self.path.parent}: no random-generator state saved for epoch "
                                f"{epoch}; cannot resume exactly")
        for v, value in zip(_seed_variables(self.model), saved["seeds"]):
            v.assign(np.asarray(value, dtype=v.dtype))
        self.checkpoint.best = saved["best"]
        if self.stopping is not None:
            self.stopping.best, self.stopping.wait = saved["best"], saved["wait"]

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        self.state["epochs"][str(done)] = {
            # by position: Keras numbers the generators' names per process
            "seeds": [np.asarray(v).tolist() for v in _seed_variables(self.model)],
            "best": self.checkpoint.best,
            "wait": self.stopping.wait if self.stopping is not None else 0,
        }
        for old in [k for k in self.state["epochs"] if int(k) < done - 1]:
            del self.state["epochs"][old]
        self.save()

    def finish(self) -> None:
        self.state["done"] = True
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.state) + "\n")


class Resume(keras.callbacks.Callback):
    """Puts the run state back once ``BackupAndRestore`` (before it in the list) has restored."""

    def __init__(self, state: RunState):
        super().__init__()
        self.state = state

    def on_train_begin(self, logs=None):
        self.state.restore()


class EpochLine(keras.callbacks.Callback):
    """One line per epoch on stderr: losses, validation macro-F per head, mean, time."""

    def __init__(self, epochs: int, checkpoint: BestCheckpoint):
        super().__init__()
        self.epochs, self.checkpoint = epochs, checkpoint
        self.before = None

    def on_epoch_begin(self, epoch, logs=None):
        self.before = self.checkpoint.best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        improved = self.checkpoint.best != self.before
        print(f"epoch {epoch + 1}/{self.epochs}  loss {logs.get('loss', np.nan):.3f}  val loss "
              f"{logs['val_loss']:.3f}  val macro-F "
              + " ".join(f"{t[:3]} {logs[f'val_macro_f_{t}']:.3f}" for t in TRAITS)
              + f"  mean {logs[MONITOR]:.3f}{'  *best' if improved else ''}  {logs['seconds']:.1f} s",
              file=sys.stderr, flush=True)


def _seed_variables(model):
    return [v for v in model.variables if "seed_generator_state" in v.path]


def trainer_callbacks(run_dir: Path, train_data, val_data, config, *, resume: bool, progress: bool,
                      saved=None) -> tuple[list, RunState]:
    """The trainer's callbacks in their order, and the run state (to mark the run finished)."""
    scores = ValidationScores(val_data, dict(config.head_weights))
    checkpoint = BestCheckpoint(run_dir / BEST_FILE, saved=saved)
    stopping = (keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience)
                if config.patience else None)
    state = RunState(run_dir, train_data, checkpoint, stopping, resume=resume)
    line = EpochLine(config.epochs, checkpoint) if progress else None
    # double_checkpoint: the previous epoch's backup is kept, and used if the last one is torn
    backup = keras.callbacks.BackupAndRestore(str(run_dir / BACKUP_DIR), delete_checkpoint=True,
                                              double_checkpoint=True)
    # At each epoch's end the run state is written before the backup; at the start,
    # BackupAndRestore restores the epoch before Resume reads it.
    ordered = [scores, checkpoint, stopping, HistoryCSV(run_dir / HISTORY_FILE), line, state, backup,
               Resume(state)]
    return [c for c in ordered if c is not None], state
