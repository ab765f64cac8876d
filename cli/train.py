"""``profiler train``: train the set model, Model 1, Model 2 or all of them on a dataset."""
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
    from core.errors import DataError

    if find_truth(source) is None:
        raise DataError(f"{source}: no truth.txt, truth.csv or truth.jsonl; training needs labels")
    config = PrepareConfig(height=size, width=size, fit=fit, max_images=max_images)
    cache = prepare(source, cache_dir, config=config, workers=workers,
                    missing="warn" if allow_missing else "error", progress=progress)
    click.echo(cache.summary(), err=True)
    return cache


def embed_dataset(source: Path, config, *, store_path: Path | None, allow_missing: bool, progress: bool):
    """The dataset at ``source`` as image embeddings (through the embedding cache)."""
    from data_prep.dataset import find_truth, load_dataset
    from core.errors import DataError
    from profiler.embeddings import EmbeddedData, EmbeddingStore

    if (source / "meta.json").is_file():
        raise DataError(f"{source}: a prepared image cache; the set model embeds the original "
                        "images, so give it the dataset folder")
    if find_truth(source) is None:
        raise DataError(f"{source}: no truth.txt, truth.csv or truth.jsonl; training needs labels")
    dataset = load_dataset(source, missing="warn" if allow_missing else "error")
    with EmbeddingStore(store_path) as store:
        data = EmbeddedData.for_training(dataset, config, store, progress=progress)
        click.echo(f"{data.summary()}; embedding cache {store.path}: {store.hits} hits, "
                   f"{store.misses} images embedded", err=True)
    return data


MODEL_CHOICES = {"set": ["set"], "model1": ["model1"], "model2": ["model2"],
                 "both": ["model1", "model2"], "all": ["set", "model1", "model2"]}


@main.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "-m", type=Choice(list(MODEL_CHOICES)), default="set", show_default=True,
              help="'set': a frozen pretrained encoder and a head over the set of image embeddings "
                   "(the default, and much the best); 'model1'/'model2': the paper's 3D CNNs; "
                   "'both': the two 3D CNNs; 'all': all three.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run directory (with --model both/all: one sub-folder per model).")
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
@click.option("--embeddings", "store_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The embedding cache file of the set model  [default: "
                   "$PROFILER_CACHE_DIR/embeddings.sqlite, or ~/.cache/profiler/embeddings.sqlite]")
@click.option("--allow-missing", is_flag=True, help="Leave out truth users with no image folder.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT from its last finished epoch.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def train(data, model, out, preset, config_file, sets, epochs, batch_size, seed, size, cache_dir,
          workers, store_path, allow_missing, resume, quiet):
    """Train on DATA: a dataset folder (or, for the 3D CNNs, a prepared cache).

    The set model embeds every image once with a frozen pretrained encoder (cached by
    content, so a second run embeds nothing) and trains a small head; the 3D CNNs
    prepare an image cache first. OUT receives config.json, model.keras (the epoch with
    the best validation mean macro-F), history.csv, curves.png and summary.json.
    Interrupted runs continue with --resume.

    Examples:

    \b
        profiler train data/sample/train --out runs/set
        profiler train data/sample/train --model all --out runs/demo --epochs 20
    """
    from profiler.config import resolve
    from profiler.training import train as run_training

    overrides = parse_sets(sets)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed), ("size", size)):
        if value is not None:
            overrides[key] = value
    models = MODEL_CHOICES[model]
    configs = {m: resolve(preset, file=config_file, overrides={**overrides, "model": m}) for m in models}
    inputs = {}
    if "set" in configs:
        inputs["set"] = embed_dataset(data, configs["set"], store_path=store_path,
                                      allow_missing=allow_missing, progress=not quiet)
    cnn = [m for m in models if m != "set"]
    if cnn:
        first = configs[cnn[0]]
        cache = open_or_prepare(data, cache_dir or out / "cache", size=first.size, fit=first.fit,
                                max_images=first.max_images, workers=workers,
                                allow_missing=allow_missing, progress=not quiet)
        inputs.update({m: cache for m in cnn})
    for name, config in configs.items():
        run_dir = out / name if len(models) > 1 else out
        click.echo(f"training {name} ({config.preset} preset) on {len(inputs[name])} users -> {run_dir}",
                   err=True)
        summary = run_training(inputs[name], run_dir, config, resume=resume, progress=not quiet)
        click.echo(json.dumps({"run": str(run_dir), **summary}))
