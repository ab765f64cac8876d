"""``profiler predict``: profile user folders or whole datasets with a trained model."""
from __future__ import annotations

import contextlib
import sys

import click

from cli.common import Choice, embeddings_option, output_option, quiet_option, workers_option
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
@click.option("--format", "fmt", type=Choice(OUTPUT_FORMATS), default="json",
              help="json/jsonl: labels and probabilities; csv: one flat row per user; "
                   "submission: user_id:::gender:::location:::occupation for 'profiler score'.")
@output_option("Write results to this file (atomically) instead of stdout.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, help="Users decoded per batch.")
@click.option("--tta", type=click.IntRange(0, 64), default=0,
              help="Average over this many random choices/orders of each user's images (0: none).")
@click.option("--seed", type=int, default=0, help="Seed for --tta.")
@workers_option(default="1 for a few users, else the usable cores")
@embeddings_option()
@quiet_option()
def predict(paths, model_path, fmt, output, batch_size, tta, seed, workers, store_path, quiet):
    """Profile the users in PATHS: user image folders and/or dataset folders.

    Each user gets a label and the probability of every class for gender, location and
    occupation, and the number of real images used. The set model uses up to 32 images
    as they are; the 3D CNNs fill a volume of 11 (a user with fewer is flagged
    "filled"). Unreadable files are listed per user; a user with no usable image gets
    an error entry and the run goes on.

    Exit codes: 0 every user profiled; 3 some users could not be profiled; 1 bad input;
    2 usage error.

    Example:

    \b
        profiler predict data/sample/test --model runs/demo/set/model.keras --format submission -o set.txt
    """
    from core.io import atomic_path
    from data_prep.cache import default_workers
    from data_prep.dataset import discover_users
    from profiler.prediction import PredictionWriter, Predictor, iter_predictions

    users = discover_users(list(paths))
    if not users:
        raise click.ClickException("no users found in " + ", ".join(paths))
    predictor = Predictor.load(model_path, store=store_path)
    if workers is None:
        workers = default_workers() if len(users) >= 4 * batch_size else 1
    failed = 0
    with (atomic_path(output) if output else contextlib.nullcontext()) as target:
        with (open(target, "w", encoding="utf-8") if output else contextlib.nullcontext(sys.stdout)) as stream:
            writer = PredictionWriter(stream, fmt, predictor.info["labels"], name=output or "<stdout>")
            for rows in iter_predictions(users, predictor, batch_size=batch_size, tta=tta, seed=seed,
                                         workers=workers, progress=not quiet):
                for row in rows:
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
    if output:
        click.echo(f"wrote {len(users)} users to {output}", err=True)
    if failed:
        click.echo(f"{failed} of {len(users)} users could not be profiled", err=True)
        sys.exit(EXIT_SOME_FAILED)
