"""``profiler predict``: profile user folders or whole datasets with a trained model."""
from __future__ import annotations

import json
import sys

import click

from cli.main import Choice, main

#: exit code when some users could not be profiled (no usable image)
EXIT_SOME_FAILED = 3


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", "model_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="A .keras model from 'profiler train' (its run directory's model.keras): "
                   "the set model (the default of 'profiler train') or Model 1/2.")
@click.option("--format", "fmt", type=Choice(["json", "jsonl", "csv", "submission"]), default="json",
              help="json/jsonl: labels and probabilities; csv: one flat row per user; "
                   "submission: user_id:::gender:::location:::occupation for 'profiler score'.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write results here (atomically) instead of stdout.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, help="Users decoded per batch.")
@click.option("--tta", type=click.IntRange(0, 64), default=0,
              help="Average over this many random choices/orders of each user's images (0: none).")
@click.option("--seed", type=int, default=0, help="Seed for --tta.")
@click.option("--workers", "-j", type=click.IntRange(1, 256), default=None,
              help="Decoding processes  [default: 1 for a few users, else the usable cores]")
@click.option("--embeddings", "store_path", type=click.Path(dir_okay=False), default=None,
              help="The set model's embedding cache file  [default: "
                   "$PROFILER_CACHE_DIR/embeddings.sqlite, or ~/.cache/profiler/embeddings.sqlite]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
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
    from data_prep.cache import default_workers
    from data_prep.dataset import discover_users
    from core.io import atomic_path
    from core.labels import TRAITS
    from data_prep.truth import label_line
    from profiler.prediction import Predictor, flatten, iter_predictions, to_json_record

    users = discover_users(list(paths))
    if not users:
        raise click.ClickException("no users found in " + ", ".join(paths))
    predictor = Predictor.load(model_path, store=store_path)
    if workers is None:
        workers = default_workers() if len(users) >= 4 * batch_size else 1
    failed = 0
    first = True
    with (atomic_path(output) if output else _stdout()) as target:
        stream = open(target, "w", encoding="utf-8") if output else sys.stdout
        try:
            if fmt == "json":
                stream.write("[")
            for rows in iter_predictions(users, predictor, batch_size=batch_size, tta=tta, seed=seed,
                                         workers=workers, progress=not quiet):
                for row in rows:
                    if row["error"]:
                        failed += 1
                        click.echo(f"warning: {row['user_id']}: {row['error']}; not profiled", err=True)
                if fmt in ("json", "jsonl"):
                    for row in rows:
                        text = json.dumps(to_json_record(row))
                        if fmt == "json":
                            stream.write(("\n  " if first else ",\n  ") + text)
                        else:
                            stream.write(text + "\n")
                        first = False
                elif fmt == "csv":
                    table = flatten(rows, predictor.info["labels"])
                    stream.write(table.to_csv(index=False, header=first))
                    first = False
                else:
                    for row in rows:
                        if not row["error"]:
                            stream.write(label_line([row["user_id"], *(row[t] for t in TRAITS)],
                                                    output or "<stdout>"))
            if fmt == "json":
                stream.write("\n]\n")
        finally:
            if output:
                stream.close()
    if output:
        click.echo(f"wrote {len(users)} users to {output}", err=True)
    if failed:
        click.echo(f"{failed} of {len(users)} users could not be profiled", err=True)
        sys.exit(EXIT_SOME_FAILED)


class _stdout:
    """A stand-in for ``atomic_path`` when results go to stdout."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
