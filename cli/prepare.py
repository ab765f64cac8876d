"""``profiler prepare``: decode a dataset into a memory-mapped cache."""
from __future__ import annotations

import click

from cli.common import Choice, out_dir_option, quiet_option, workers_option


@click.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@out_dir_option("Cache folder to write (replaced atomically when complete).", required=True)
@click.option("--size", type=click.IntRange(8, 1024), default=64,
              help="Height and width of each image in pixels.")
@click.option("--fit", type=Choice(["pad", "crop"]), default="pad",
              help="Keep the aspect ratio by padding (whole image kept) or centre-cropping.")
@click.option("--max-images", type=click.IntRange(1, 1000), default=32,
              help="Most images kept per user (an even spread of the sorted files).")
@workers_option()
@click.option("--no-draft", is_flag=True, help="Decode JPEGs at full size before resizing (slower).")
@click.option("--allow-missing", is_flag=True,
              help="Leave out truth users with no image folder (warn) instead of failing.")
@click.option("--force", is_flag=True, help="Rebuild even if an up-to-date cache exists.")
@quiet_option()
def prepare(dataset, out_dir, size, fit, max_images, workers, no_draft, allow_missing, force, quiet):
    """Decode every user's images in DATASET into a cache folder for training.

    DATASET has images/<user_id>/ (or photo/<user_id>/) and optionally truth.txt.
    Unusable files are skipped with a warning and listed in CACHE/skipped.csv.

    Example:

    \b
        profiler prepare data/sample/train --out-dir cache/train --size 64
    """
    from data_prep.cache import PrepareConfig
    from data_prep.cache import prepare as run_prepare

    config = PrepareConfig(height=size, width=size, fit=fit, draft=not no_draft,
                           max_images=max_images)
    cache = run_prepare(dataset, out_dir, config=config, workers=workers,
                        missing="warn" if allow_missing else "error", force=force,
                        progress=not quiet)
    click.echo(cache.summary())
