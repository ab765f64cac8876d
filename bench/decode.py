"""Stage "decode": decode + resize + stack, against a plain baseline measured in the same run.

Reproduce with:  .venv/bin/python -m bench.decode [--json out.json] [--quick]

Data: 200 users of 11 JPEGs of 400x400 (photo-like, made once under /tmp). For 64 and
112 px: users per second per core (one worker process: what one core does) and with
every core, of ``data_prep.cache.decode_users`` (what ``prepare`` and ``predict`` use),
and of the obvious code written as a newcomer would (Pillow open -> convert("RGB") ->
resize -> numpy stack, one process), as a ratio.
"""
from __future__ import annotations


import numpy as np
from PIL import Image

from bench.common import bench_jpegs, figure, stage_main, timed


def plain_decode(users, size: int) -> np.ndarray:
    """The obvious way: open, convert, resize, stack; one process."""
    volumes = []
    for user in users:
        images = [np.asarray(Image.open(f).convert("RGB").resize((size, size))) for f in user.files]
        volumes.append(np.stack(images))
    return volumes


def run(quick: bool = False) -> list[dict]:
    from data_prep.cache import PrepareConfig, decode_users, default_workers
    from data_prep.dataset import load_dataset

    n_users, runs = (40, 2) if quick else (200, 3)
    root = bench_jpegs(n_users)
    users = load_dataset(root).users
    cores = default_workers()
    out = []
    for size in (64, 112):
        config = PrepareConfig(height=size, width=size)
        plain = timed(lambda: plain_decode(users, size), runs)
        one = timed(lambda: list(decode_users(users, config, workers=1)), runs)
        every = timed(lambda: list(decode_users(users, config, workers=cores)), runs)
        plain_ups = [n_users / t for t in plain]
        one_ups = [n_users / t for t in one]
        out.append(figure("decode", f"{size} px: plain Pillow baseline, 1 process", plain_ups, "users/s"))
        out.append(figure("decode", f"{size} px: profiler, per core (1 worker)", one_ups, "users/s",
                          ratio_to_baseline=float(np.median(one_ups) / np.median(plain_ups))))
        out.append(figure("decode", f"{size} px: profiler, {cores} workers", [n_users / t for t in every],
                          "users/s", ratio_to_baseline=float(n_users / np.median(every) / np.median(plain_ups))))
    return out


if __name__ == "__main__":
    stage_main(run, __doc__)
