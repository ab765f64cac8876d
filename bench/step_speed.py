"""The 3D CNNs' training step against a plain Keras sketch of the same layers.

Reproduce with:  .venv/bin/python -m bench.step_speed [--quick] [--json FILE]
(``make bench`` runs it as the ``step`` stage; ``bench/step_cost.py`` breaks the step down
further and measures what batch normalisation buys.)

Raw ``train_on_batch`` of 16 users at 64 px with TensorFlow's op determinism on, as
``profiler train`` runs, each variant built in this process and timed in interleaved
rounds: the plain sketch (Conv3D + max-pool, no batch norm), the package's model with
Keras' own batch norm layer (the "before") and the package's model as it is (fused batch
norm). Users/s, each as a ratio to the sketch, and the paper's protocol (3,500 users x 100
epochs) projected from the package's rate.
"""
from __future__ import annotations

import numpy as np

from bench.common import figure, stage_main

VARIANTS = ("plain sketch", "package, Keras batch norm (before)", "package (fused batch norm)")
PROTOCOL_USERS, PROTOCOL_EPOCHS = 3500, 100


def run(quick: bool = False) -> list[dict]:
    from bench.step_cost import BATCH, SIZE, step_rates

    rates = step_rates(True, rounds=2 if quick else 5, steps=3 if quick else 12, keep=VARIANTS)
    out = []
    for model, by_name in rates.items():
        sketch = float(np.median(by_name["plain sketch"]))
        for name in VARIANTS:
            r = by_name[name]
            extra = {} if name == "plain sketch" else {"ratio_to_baseline": float(np.median(r)) / sketch,
                                                       "baseline": "the plain sketch"}
            out.append(figure("step", f"{model} {SIZE} px, batch {BATCH}: {name}", r, "users/s", **extra))
        package = float(np.median(by_name["package (fused batch norm)"]))
        out.append(figure("step", f"{model}: the paper's protocol ({PROTOCOL_USERS:,} users x {PROTOCOL_EPOCHS} "
                          "epochs) at this step rate", [PROTOCOL_USERS * PROTOCOL_EPOCHS / package / 3600], "h",
                          projected=True))
    return out


if __name__ == "__main__":
    stage_main(run, __doc__)
