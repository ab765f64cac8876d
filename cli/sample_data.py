"""``profiler sample-data``: make the embedded sample dataset from Twemoji images."""
from __future__ import annotations

import time

import click

from cli.common import SEED, FloatRange, quiet_option, workers_option


@click.command("sample-data")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--users", type=click.IntRange(2, 10_000_000), default=1000,
              help="Users in all (train and test together).")
@click.option("--seed", type=SEED, default=0, help="Random seed; the output is byte-identical for a seed.")
@click.option("--test-share", type=FloatRange(0.01, 0.99), default=0.3,
              help="Share of the users in the test split (the paper: 1,500 of 5,000).")
@click.option("--signal", type=FloatRange(0, 1), default=0.3,
              help="Share of a user's images that carry information about its labels.")
@workers_option("Processes")
@click.option("--contact-sheet", type=click.Path(dir_okay=False), default=None,
              help="Also draw the first test users' images into this PNG.")
@click.option("--force", is_flag=True,
              help="Replace OUT if it holds an earlier sample dataset (only once the new data is "
                   "complete); any other folder is never replaced.")
@quiet_option()
def sample_data(out, users, seed, test_share, signal, workers, contact_sheet, force, quiet):
    """Make a sample dataset in OUT/train and OUT/test from real Twemoji images.

    Each user has a gender, a location and an occupation drawn from skewed priors, and
    11 images (a few have fewer or more, a few files are broken as in scraped data).
    Some images show emoji tied to the user's labels, the rest are noise. OUT/generator.json
    records the process and the Bayes ceiling: the best accuracy and macro-F any reader
    of the images could reach.

    Example:

    \b
        profiler sample-data data/sample --users 1000 --seed 0
    """
    from data_prep.cache import default_workers
    from data_prep.sample.generate import SampleConfig, generate
    from data_prep.sample.process import ProcessConfig

    config = SampleConfig(users=users, seed=seed, test_share=test_share,
                          process=ProcessConfig(signal=signal))
    start = time.perf_counter()
    meta = generate(out, config, workers=workers or default_workers(), force=force, progress=not quiet)
    elapsed = time.perf_counter() - start
    sizes = meta["users"]
    click.echo(f"wrote {sizes['train']} train and {sizes['test']} test users "
               f"({meta['files']['total']} files) to {out} in {elapsed:.1f} s")
    click.echo("Bayes ceiling (population):  " + "  ".join(
        f"{t} acc {meta['ceiling']['population'][t]['accuracy']:.3f} "
        f"macro-F {meta['ceiling']['population'][t]['macro_f']:.3f}"
        for t in ("gender", "location", "occupation")))
    if contact_sheet:
        from pathlib import Path

        from profiler.plots import contact_sheet as draw

        draw(Path(out) / "test", contact_sheet)
        click.echo(f"wrote {contact_sheet}")
