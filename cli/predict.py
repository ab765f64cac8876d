"""``profiler predict``: profile user folders or whole datasets with a trained model."""
from __future__ import annotations

import contextlib
import json
import sys

import click

from cli.common import (SEED, Choice, dash_is_stdout, embeddings_option, quiet_option, refuse_output_over_inputs,
                        spark_options, workers_option)
from profiler.prediction import OUTPUT_FORMATS

#: exit code when some users could not be profiled (no usable image)
EXIT_SOME_FAILED = 3
#: unreadable files named per user on stderr (the output formats list them all)
SHOWN_SKIPPED = 5


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", "model_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="A .keras model from 'profiler train' (its run directory's model.keras): "
                   "the set model (the default of 'profiler train') or Model 1/2.")
@click.option("--format", "fmt", type=Choice(OUTPUT_FORMATS + ("parquet",)), default=None,
              help="json/jsonl: labels and probabilities; csv: one flat row per user; "
                   "submission: user_id:::gender:::location:::occupation for 'profiler score'; "
                   "parquet (--engine spark): a folder of Parquet parts, one row per user  "
                   "[default: json; parquet with --engine spark]")
@click.option("--output", "-o", type=click.Path(), default=None, callback=dash_is_stdout,
              help="Write results to this file (a folder for parquet), atomically, instead of stdout "
                   "('-': stdout).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, help="Users decoded per batch.")
@click.option("--tta", type=click.IntRange(0, 64), default=0,
              help="Average over this many random choices/orders of each user's images (0: none).")
@click.option("--seed", type=SEED, default=0, help="Seed for --tta.")
@click.option("--decide", default=None, metavar="RULE",
              help="How a label is chosen from the probabilities: 'argmax' (the most probable class: "
                   "the best accuracy), 'balanced' (relative to each class's share of the training users: "
                   "the best macro-F, the shared task's measure, if the probabilities are calibrated), "
                   "'macro' (between the two, p / share^a with a from 0 to 1 per trait, chosen for the "
                   "best macro-F on the validation split), or 'precision=P', e.g. precision=0.9 (a "
                   "class only above a threshold fitted on the validation split to reach precision P; a "
                   "user above none gets 'unknown')  [default: macro; argmax for a model trained "
                   "with calibrate=false]")
@click.option("--explain", type=click.IntRange(0, 64), default=0, metavar="K",
              help="Add each user's evidence (json and jsonl): per trait, the K images that support the "
                   "decided class most and by how much its probability falls without each (leave one "
                   "image out; a 3D CNN's image blacked out). One more model pass per image  [default: 0, none]")
@workers_option(default="1 for a few users, else the usable cores")
@embeddings_option()
@spark_options("Profile")
@quiet_option()
def predict(paths, model_path, fmt, output, batch_size, tta, seed, decide, explain, workers, store_path, engine,
            master, partitions, quiet):
    """Profile the users in PATHS: user image folders and/or dataset folders.

    Each user gets a label and the probability of every class for gender, location and
    occupation, the number of real images used, and an out-of-distribution score (ood:
    how unlike the training images its images are; ood_rank: the share of validation users
    with a lower one). The set model uses up to 32 images
    as they are; the 3D CNNs fill a volume of 11 (a user with fewer is flagged
    "filled"). Unreadable files are listed per user; a user with no usable image gets
    an error entry and the run goes on.

    With --engine spark the same job runs on Apache Spark (pip install 'profiler[spark]'):
    the users are listed here and profiled by Spark's workers, each loading the model
    once; --master local[*] uses this machine's cores, a cluster URL a cluster (whose
    workers must see the image files at the same paths). The answers are the same.

    Exit codes: 0 every user profiled; 3 some users could not be profiled; 1 bad input;
    2 usage error.

    Examples:

    \b
        profiler predict data/sample/test --model runs/demo/set/model.keras --format submission -o set.txt
        profiler predict data/sample/test --model runs/demo/set/model.keras --engine spark -o set.parquet
    """
    from pathlib import Path

    from data_prep.cache import default_workers
    from data_prep.dataset import discover_users
    from profiler.prediction import Predictor, iter_predictions

    fmt = fmt or ("parquet" if engine == "spark" else "json")
    if fmt == "parquet" and (engine != "spark" or not output):
        raise click.UsageError("--format parquet needs --engine spark and --output (a folder)")
    if explain and (fmt not in ("json", "jsonl") or engine == "spark"):
        raise click.UsageError("--explain writes its evidence in the json and jsonl formats, with --engine local")
    if output and fmt != "parquet" and Path(output).is_dir():
        raise click.UsageError(f"--output {output}: a folder; the {fmt} format writes a file")
    refuse_output_over_inputs(output, {"the model file": model_path, "the embedding cache": store_path})
    users = discover_users(list(paths))
    if not users:
        raise click.ClickException("no users found in " + ", ".join(paths))
    # a bad model file or rule fails here, on the driver
    predictor = Predictor.load(model_path, store=store_path, decide=decide)
    labels = predictor.info["labels"]
    if predictor.decider.rule == "precision":
        used = predictor.decider.describe()["thresholds"]
        click.echo(f"--decide {decide}: thresholds from the validation split (none: the class is never "
                   f"predicted): {json.dumps(used)}", err=True)
    if engine == "spark":
        from profiler import spark as engine_spark

        predictor.reader.close()
        spark = engine_spark.session(master, batch_users=batch_size)
        try:
            with engine_spark.job_errors():
                frame = engine_spark.predict_frame(spark, users, model_path, labels, partitions=partitions, tta=tta,
                                                   seed=seed, store=store_path, decide=decide)
                if fmt == "parquet":
                    engine_spark.write_parquet(frame, output)
                    counts = spark.read.parquet(output).selectExpr("count(error)", "sum(size(skipped))").first()
                    failed, skipped = counts[0], counts[1] or 0
                else:
                    failed, skipped = _write(engine_spark.ordered_rows(frame, labels), fmt, labels, output)
        finally:
            spark.stop()
    else:
        if workers is None:
            workers = default_workers() if len(users) >= 4 * batch_size else 1
        failed, skipped = _write(iter_predictions(users, predictor, batch_size=batch_size, tta=tta, seed=seed,
                                                  workers=workers, progress=not quiet, explain=explain),
                                 fmt, labels, output)
    if output:
        click.echo(f"wrote {len(users)} users to {output}", err=True)
    if skipped:  # Parquet's rows name them in their column; every other format's warnings above
        named = "the output's 'skipped' column names them" if fmt == "parquet" else "the warnings above name them"
        click.echo(f"{skipped} image file{'s' * (skipped != 1)} skipped in all ({named})", err=True)
    if failed:
        click.echo(f"{failed} of {len(users)} users could not be profiled", err=True)
        sys.exit(EXIT_SOME_FAILED)


def _write(batches, fmt: str, labels: dict, output: str | None) -> tuple[int, int]:
    """Write batches of per-user results to ``output`` (atomically) or stdout, naming skipped
    files and failed users on stderr; return how many users failed and how many files were
    skipped."""
    from core.io import atomic_path
    from profiler.prediction import PredictionWriter

    failed = skipped = 0
    with (atomic_path(output) if output else contextlib.nullcontext()) as target:
        with (open(target, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)) as stream:
            writer = PredictionWriter(stream, fmt, labels, name=output or "<stdout>")
            for rows in batches:
                for row in rows:
                    skipped += len(row["skipped"])
                    for item in row["skipped"][:SHOWN_SKIPPED]:  # in every format, on stderr
                        click.echo(f"warning: {item['file']}: {item['reason']}; skipped", err=True)
                    if len(row["skipped"]) > SHOWN_SKIPPED:
                        click.echo(f"warning: {row['user_id']}: {len(row['skipped']) - SHOWN_SKIPPED} more "
                                   "files skipped", err=True)
                    if row["error"]:
                        failed += 1
                        click.echo(f"warning: {row['user_id']}: {row['error']}; not profiled", err=True)
                writer.write(rows)
            writer.close()
    return failed, skipped
