"""``profiler embed``: the image embeddings of users or datasets, as a Parquet file to carry.

Embeddings made on a cluster (``--engine spark``) or another machine are imported into
the embedding cache by ``profiler train --embeddings-from``, so the head trains on one
machine without embedding anything again.
"""
from __future__ import annotations

from pathlib import Path

import click

from cli.common import embeddings_option, quiet_option, refuse_output_over_inputs, spark_options

#: users embedded per written row group with the local engine (bounds memory)
LOCAL_BATCH_USERS = 256


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", type=click.Path(path_type=Path), required=True,
              help="The Parquet output: a file (local engine) or a folder of parts (--engine spark); "
                   "written atomically.")
@click.option("--encoder", default=None,
              help="The encoder: a name, or a set model's .keras file (the encoder it reads with, "
                   "its adapted one where it keeps one)  [default: the set model's default, "
                   "efficientnet_lite2_int8_centre]")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, help="Users per batch.")
@embeddings_option()
@spark_options("Embed")
@quiet_option()
def embed(paths, output, encoder, batch_size, store_path, engine, master, partitions, quiet):
    """Embed every image of the users in PATHS (user folders and/or dataset folders).

    One row per image file: user_id, file, digest (SHA-256 of the file's bytes), encoder
    (its identity: name and weights digest), vector, and the reason a file is unusable.
    Images already in the embedding cache are not embedded again. Give the file to
    'profiler train --embeddings-from' to train on these embeddings elsewhere.

    Examples:

    \b
        profiler embed data/sample/train -o train-embeddings.parquet
        profiler embed data/sample/train --engine spark --master local[2] -o train-embeddings.parquet
        profiler embed data/sample/test --encoder runs/adapted/model.keras -o test-embeddings.parquet
        profiler train data/sample/train --run-dir runs/set --embeddings-from train-embeddings.parquet
    """
    from data_prep.dataset import discover_users
    from profiler.encoders import DEFAULT_ENCODER
    from profiler.families.sets import encoder_from

    users = discover_users(list(paths))
    if not users:
        raise click.ClickException("no users found in " + ", ".join(paths))
    refuse_output_over_inputs(output, {"the embedding cache": store_path})
    name = encoder or DEFAULT_ENCODER
    if name.endswith(".keras"):  # a model file: Spark's workers open it by its absolute path
        name = str(Path(name).absolute())
    chosen = encoder_from(name)  # an unknown name or a bad model file fails here, naming it
    images = sum(len(u.files) for u in users)
    if engine == "spark":
        from profiler import spark as engine_spark

        spark = engine_spark.session(master, batch_users=batch_size)
        try:
            with engine_spark.job_errors():
                engine_spark.write_parquet(engine_spark.embed_frame(spark, users, name, partitions=partitions,
                                                                    store=store_path), output)
        finally:
            spark.stop()
    else:
        _embed_local(users, chosen, output, store_path, quiet)
    click.echo(f"wrote the embeddings of {images} image files of {len(users)} users to {output}", err=True)


def _embed_local(users, encoder, output: Path, store_path, quiet: bool) -> None:
    import sys

    from tqdm.auto import tqdm

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise click.ClickException("writing Parquet needs pyarrow: pip install 'profiler[spark]'") from exc
    from core.io import atomic_path
    from profiler.embeddings import EmbeddingStore, embedding_rows

    if output.is_dir():
        raise click.UsageError(f"--output {output}: a folder; the local engine writes one Parquet file")
    schema = pa.schema([("user_id", pa.string()), ("file", pa.string()), ("digest", pa.string()),
                        ("encoder", pa.string()), ("vector", pa.list_(pa.float32())), ("reason", pa.string())])
    bar = tqdm(total=len(users), unit="user", desc="embedding", file=sys.stderr, disable=quiet,
               dynamic_ncols=True)
    with EmbeddingStore(store_path) as store, atomic_path(output, suffix=".parquet") as tmp:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, len(users), LOCAL_BATCH_USERS):
                part = users[start:start + LOCAL_BATCH_USERS]
                frame = embedding_rows(part, encoder, store)
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
                bar.update(len(part))
    bar.close()
