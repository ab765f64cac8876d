"""``profiler train``: train Model 1, Model 2 or both on a dataset or a prepared cache."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cli.main import Choice, main
from profiler.config import field_names


def parse_sets(values: tuple[str, ...]) -> dict:
    out = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def open_or_prepare(source: Path, cache_dir: Path, *, size: int, fit: str, max_images: int,
                    workers: int | None, allow_missing: bool, progress: bool):
    """A cache: ``source`` itself if it is one, else ``source`` prepared into ``cache_dir``."""
    from data_prep.cache import Cache, PrepareConfig, prepare

    if (source / "meta.json").is_file():
        return Cache.open(source)
    from data_prep.dataset import find_truth
    from data_prep.errors import DataError

    if find_truth(source) is None:
        raise DataError(f"{source}: no truth.txt, truth.csv or truth.jsonl; training needs labels")
    config = PrepareConfig(height=size, width=size, fit=fit, max_images=max_images)
    cache = prepare(source, cache_dir, config=config, workers=workers,
                    missing="warn" if allow_missing else "error", progress=progress)
    click.echo(cache.summary(), err=True)
    return cache


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "-m", type=Choice(["model1", "model2", "both"]), default="model1",
              help="Which of the paper's models to train.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory (with --model both: one sub-folder per model).")
@click.option("--preset", type=Choice(["default", "paper"]), default="default",
              help="Starting hyper-parameters: 'paper' as published, 'default' what trains well on CPU.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON or TOML file of settings (any TrainConfig field).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one setting, e.g. --set learning_rate=3e-4 --set filters=[16,32,64,128]. "
                   "Settings: " + ", ".join(field_names()) + ".")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override the preset's epochs.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Override the preset's batch size.")
@click.option("--seed", type=int, default=None, help="Random seed  [default: 0]")
@click.option("--size", type=click.IntRange(8, 1024), default=None,
              help="Image size when preparing a dataset  [default: 64]")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to prepare a dataset's cache  [default: OUT/cache]")
@click.option("--workers", "-j", type=click.IntRange(1, 256), default=None,
              help="Decoding processes when preparing  [default: the usable cores]")
@click.option("--allow-missing", is_flag=True, help="Leave out truth users with no image folder.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT from its last finished epoch.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def train(data, model, out, preset, config_file, sets, epochs, batch_size, seed, size, cache_dir,
          workers, allow_missing, resume, quiet):
    """Train on DATA: a dataset folder (prepared into a cache first) or a prepared cache.

    OUT receives config.json, model.keras (the epoch with the best validation mean
    macro-F), history.csv, curves.png and summary.json. Interrupted runs continue with
    --resume.

    Example:

    \b
        profiler train data/sample/train --model both --out runs/demo --epochs 20
    """
    from profiler.config import resolve
    from profiler.training import train as run_training

    overrides = parse_sets(sets)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed), ("size", size)):
        if value is not None:
            overrides[key] = value
    models = ["model1", "model2"] if model == "both" else [model]
    configs = {m: resolve(preset, file=config_file, overrides={**overrides, "model": m}) for m in models}
    first = configs[models[0]]
    cache = open_or_prepare(data, cache_dir or out / "cache", size=first.size, fit=first.fit,
                            max_images=first.max_images, workers=workers,
                            allow_missing=allow_missing, progress=not quiet)
    for name, config in configs.items():
        run_dir = out / name if model == "both" else out
        click.echo(f"training {name} ({config.preset} preset) on {len(cache)} users -> {run_dir}", err=True)
        summary = run_training(cache, run_dir, config, resume=resume, progress=not quiet)
        click.echo(json.dumps({"run": str(run_dir), **summary}))
