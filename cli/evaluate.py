"""``profiler evaluate`` and ``profiler demo``: the whole job in one command."""
from __future__ import annotations

import click

from cli.common import SEED, out_dir_option, quiet_option, workers_option


@click.command()
@click.argument("run", type=click.Path(exists=True))
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@out_dir_option("Where to write  [default: RUN/evaluation]")
@workers_option()
@quiet_option()
def evaluate(run, dataset, out_dir, workers, quiet):
    """Predict DATASET with RUN's model, score it, and write tables and plots.

    RUN is a 'profiler train' run directory (its model.keras is used) or a .keras file.
    Writes submission.txt, predictions.csv, tables.md/.csv (the paper's Tables 1-5),
    scores.json, confusion-matrix PNGs and report.md.

    Example:

    \b
        profiler evaluate runs/demo/model1 data/sample/test
    """
    from profiler.runs import evaluate_run

    result = evaluate_run(run, dataset, out=out_dir, workers=workers, progress=not quiet)
    click.echo(result["table"])
    click.echo(f"\nwrote {result['out']}", err=True)


@click.command()
@out_dir_option("Folder for tables, plots and submissions.", default="results")
@click.option("--data", type=click.Path(file_okay=False), default="data/sample",
              help="Where the sample data is made (reused if it matches).")
@click.option("--runs", type=click.Path(file_okay=False), default="runs/demo",
              help="Where the three training runs and the embedding cache go (runs are reused if "
                   "finished with the same settings).")
@click.option("--users", type=click.IntRange(20, 10_000_000), default=1000,
              help="Sample users (train and test).")
@click.option("--epochs", type=click.IntRange(1, 100_000), default=8, help="Most epochs per 3D CNN.")
@click.option("--size", type=click.IntRange(8, 512), default=64, help="Image size in pixels.")
@click.option("--seed", type=SEED, default=0, help="Seed for the data and the training.")
@workers_option("Processes for making and decoding images")
@quiet_option("No progress bars.")
def demo(out_dir, data, runs, users, epochs, size, seed, workers, quiet):
    """Run the whole job on the bundled sample data and write the results.

    Makes the sample data, trains the set model (frozen pretrained encoder + head),
    Model 1 and Model 2, predicts the test split, scores them beside majority and
    random baselines, the paper's rows, an item oracle and the sample data's Bayes
    ceiling, and writes tables (Markdown, CSV), plots and submissions into --out-dir.

    Example:

    \b
        profiler demo --out-dir results
    """
    from profiler.demo import demo as run_demo

    result = run_demo(out_dir, data=data, runs=runs, users=users, seed=seed, epochs=epochs, size=size,
                      workers=workers, progress=not quiet)
    click.echo(result["table"])
    click.echo(f"\nresults in {result['out']}/ (summary.md, tables.md, plots); "
               f"{result['timings']['total_s'] / 60:.1f} min", err=True)
