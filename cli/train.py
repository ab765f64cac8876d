"""``profiler train``: train the set model, Model 1, Model 2 or all of them on a dataset."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cli.common import SEED, Choice, embeddings_option, quiet_option, workers_option
from profiler.config import field_names


def parse_sets(values: tuple[str, ...]) -> dict:
    out = {}
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


MODEL_CHOICES = {"set": ["set"], "model1": ["model1"], "model2": ["model2"],
                 "both": ["model1", "model2"], "all": ["set", "model1", "model2"]}


@click.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "-m", type=Choice(list(MODEL_CHOICES)), default="set", show_default=True,
              help="'set': a frozen pretrained encoder and a head over the set of image embeddings "
                   "(the default, and much the best); 'model1'/'model2': the paper's 3D CNNs; "
                   "'both': the two 3D CNNs; 'all': all three.")
@click.option("--run-dir", "-r", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The run directory (with --model both/all: one sub-folder per model).")
@click.option("--preset", type=Choice(["default", "paper"]), default="default",
              help="Starting hyper-parameters: 'paper' as published, 'default' what trains well on CPU.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON or TOML file of settings (any TrainConfig field).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override one setting, e.g. --set learning_rate=3e-4 --set filters=[16,32,64,128]. "
                   "Settings: " + ", ".join(field_names()) + ".")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override the preset's epochs.")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Override the preset's batch size.")
@click.option("--adapt-epochs", type=click.IntRange(0, 100), default=None,
              help="Set model: first adapt the encoder's top to these users for N epochs (EfficientNet-Lite2, "
                   "whole image and centre crop, in float; its last block trained towards the images' sources "
                   "that the latent head's EM finds), then train the head on the adapted embeddings. The "
                   "model file keeps the adapted encoder. Experimental: it raises what the features allow "
                   "at the paper's size, but the default head has not gained from it reliably, and it costs "
                   "4-5x the training time (README)  [default: 0, the frozen encoder]")
@click.option("--seed", type=SEED, default=None, help="Random seed  [default: 0]")
@click.option("--size", type=click.IntRange(8, 1024), default=None,
              help="Image size when preparing a dataset  [default: 64]")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to prepare a dataset's cache  [default: RUN_DIR/cache]")
@workers_option("Decoding processes when preparing")
@embeddings_option()
@click.option("--embeddings-from", "imports", multiple=True,
              type=click.Path(exists=True, path_type=Path),
              help="Import these embeddings ('profiler embed' output, Parquet) into the embedding cache "
                   "first: training data embedded elsewhere (a Spark cluster) trains here without "
                   "embedding again. May be repeated.")
@click.option("--allow-missing", is_flag=True, help="Leave out truth users with no image folder.")
@click.option("--distribute", type=Choice(["none", "mirrored", "multiworker"]), default="none",
              help="'mirrored': split each batch over this machine's GPUs; 'multiworker': train on "
                   "several machines at once, running this same command on each with the cluster and "
                   "its own index in the environment variable TF_CONFIG (worker 0 writes RUN_DIR).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run in RUN_DIR from its last finished epoch.")
@quiet_option("No progress output.")
def train(data, model, run_dir, preset, config_file, sets, epochs, batch_size, adapt_epochs, seed, size, cache_dir,
          workers, store_path, imports, allow_missing, distribute, resume, quiet):
    """Train on DATA: a dataset folder (or, for the 3D CNNs, a prepared cache).

    The set model embeds every image once with a frozen pretrained encoder (cached by
    content, so a second run embeds nothing) and trains a small head; the 3D CNNs
    prepare an image cache first. RUN_DIR receives config.json, model.keras (the epoch with
    the best validation mean macro-F, calibrated on the validation users; the set model's
    bank then refilled with their images too), history.csv, curves.png and summary.json.
    Interrupted runs continue with --resume.

    Examples:

    \b
        profiler train data/sample/train --run-dir runs/set
        profiler train data/sample/train --model all --run-dir runs/demo --epochs 20
    """
    from profiler.config import resolve
    from profiler.families import family_of
    from profiler.training import train as run_training

    if distribute != "none":  # TensorFlow's collective ops are set up before it runs anything else
        from profiler.training import distribution

        distribution(distribute)
    overrides = parse_sets(sets)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("seed", seed), ("size", size)):
        if value is not None:
            overrides[key] = value
    models = MODEL_CHOICES[model]
    adapt = {} if adapt_epochs is None else {"adapt_epochs": adapt_epochs}  # the set model's alone
    configs = {m: resolve(preset, file=config_file, overrides={**overrides, **(adapt if m == "set" else {}), "model": m})
               for m in models}
    if imports:
        from profiler.embeddings import EmbeddingStore, import_embeddings

        expect = {}  # the length of the set model's encoder's vectors, checked before any is stored
        if "set" in configs and not configs["set"].adapt_epochs:
            from profiler.encoders import get_encoder

            encoder = get_encoder(configs["set"].encoder)
            expect[encoder.identity] = encoder.dim
        with EmbeddingStore(store_path) as store:
            for source in imports:
                counts = import_embeddings(source, store, expect=expect)
                for identity, count in counts.items() or {"(none)": 0}.items():
                    click.echo(f"imported {count} embeddings of {identity} from {source} into {store.path}",
                               err=True)
    made = {}  # one training data per family: the 3D CNNs share a prepared cache
    for name, config in configs.items():
        family = family_of(name)
        if family.name not in made:
            made[family.name] = family.training_data(
                data, config, cache_dir=cache_dir or run_dir / "cache", store=store_path, workers=workers,
                allow_missing=allow_missing, progress=not quiet)
            click.echo(made[family.name].summary(), err=True)
        inputs = made[family.name]
        target = run_dir / name if len(models) > 1 else run_dir
        click.echo(f"training {name} ({config.preset} preset) on {len(inputs)} users -> {target}",
                   err=True)
        summary = run_training(inputs, target, config, resume=resume, progress=not quiet, distribute=distribute)
        click.echo(json.dumps({"run": str(target), **summary}))
