"""Training configuration: presets, overrides from files and the command line, validation.

Every hyper-parameter is a field of ``TrainConfig``. A preset gives the starting values;
a config file (JSON or TOML) and ``--set key=value`` pairs override them; an unknown key
is an error with a "did you mean".

The ``paper`` preset reproduces the paper's stated settings as literally as its text
allows: Adam, learning rate 0.05, "decay 0.7", 100 iterations (read as epochs), batch 13.
"decay" is read as the ``decay`` argument of the Keras 2 optimizers the authors would have
used in 2019: inverse-time decay per update step, lr_t = 0.05 / (1 + 0.7 t). Nothing else
is stated, so the paper preset uses fixed volumes, no augmentation, no class weighting
and no early stopping.

The ``default`` preset is what trains well on a CPU: Adam at 1e-3 with cosine decay,
balanced class weights for the skewed traits, random image choice and order, flips,
and early stopping on the validation mean macro-F.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ConfigError
from core.labels import TRAITS, suggest
from profiler.models.choices import DEFAULT_CAP, DEFAULT_FILTERS, SET_POOLINGS, VARIANTS

MODELS = (*VARIANTS, "set")
#: convolutions per model (``filters`` needs one count each)
CONVOLUTIONS = {variant: len(filters) for variant, filters in DEFAULT_FILTERS.items()}
SCHEDULES = ("constant", "inverse_time", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")
CLASS_WEIGHTS = ("none", "balanced")


@dataclass
class TrainConfig:
    """All training hyper-parameters (see the module docstring for the presets)."""

    model: str = "model1"
    preset: str = "default"
    # data
    p: int = 11
    size: int = 64
    fit: str = "pad"
    max_images: int = 32
    val_share: float = 0.15
    sample_images: bool = True  # random choice among a user's images, random order
    flip: bool = True  # random horizontal flips of single images
    # model
    filters: list[int] | None = None
    dense: list[int] = field(default_factory=lambda: [256])
    dropout: float = 0.5
    batch_norm: bool = True
    pooling: str = "avg"
    # the set model (frozen encoder + head over the set of image embeddings)
    encoder: str = "efficientnet_lite2_int8_centre"  # LiteRT int8 (results/litert.md); Lite2, centre crop: results/science.md
    cap: int = DEFAULT_CAP  # most images per user the head sees (fewer are masked, never filled)
    hidden: list[int] = field(default_factory=lambda: [256])  # per-image layers before pooling
    set_pooling: str = "latent"  # chosen by measurement on the sample data (README, results/science.md)
    neighbours: int = 200  # "neighbours" pooling: training images that vote for each image
    # principal axes the bank's similarity is computed on (512 since the "latent" head whitens
    # them: docs/science.md, "Whitened axes"; the "neighbours" head was measured with 256)
    neighbour_dims: int = 512
    neighbour_temperature: float = 0.1  # vote weights exp((similarity - best) / temperature)
    # "neighbours" and "latent" pooling: most images the bank holds (every image profiled
    # reads its neighbours among them, and the model file keeps them: about 2.4 kB an image
    # at 512 axes). A training split with more images fills it from a seeded choice of its
    # users, stratified by their labels; 100,000 images is about 8,000 users of 12, past
    # twice the paper's 3,500
    bank_images: int = 100_000
    latent_neighbours: int = 50  # "latent" pooling: training images whose sources each image reads
    latent_temperature: float = 0.05  # their vote weights, as neighbour_temperature
    latent_rounds: int = 3  # EM rounds over the training images' sources (profiler.models.latent)
    # "latent" pooling: the EM's first round reads each image's neighbours' *labels*, a
    # neighbour whose user may not post a source counting against it, each neighbour the
    # same item with this probability (profiler.models.latent.label_reading), the neighbours
    # weighted with latent_start_temperature; null: the plain start, as before (with
    # latent_rounds 4). Chosen by the EM's agreement with the answer key on the training
    # images (docs/science.md, "The EM's start")
    latent_start_trust: float | None = 0.8
    latent_start_temperature: float = 0.2
    # true: the farther neighbours' trust falls as their users' labels agree less often with
    # the image's beyond chance (profiler.models.latent.rank_agreement); off by default: it
    # finds more of the items' images but takes more noise for items, and lost 0.4-3 points
    # of the ceiling at the paper's size for +1 at the demo's (docs/science.md, "The EM's start")
    latent_start_by_rank: bool = False
    # L2 penalty of the "latent" pooling's learnt correction of the neighbours' reading
    # (set_head.SourceReader); null: no correction, the sources as the neighbours read them
    latent_reader_l2: float | None = 1e-3
    # "latent" pooling: pairs of traits whose classes an image can show together (a person at
    # work shows a gender and an occupation), each pair of classes a source of its own, as
    # ["gender*occupation"]; none by default (it trades occupation for gender: README)
    latent_pairs: list[str] = field(default_factory=list)
    # "latent" pooling: after a first EM, re-read the images on axes whitened by the spread of
    # the images *within* each source the EM found (shrunk by this share towards equal
    # spread), and run the EM again there (profiler.models.latent.within_whitening); null: not
    latent_whiten: float | None = 0.3
    # "latent" pooling: a side view of the sources, with these pairs, from which the traits in
    # latent_side_traits are read (the others from the main view): the gender-occupation pairs
    # help gender and cost occupation when one view serves all (docs/science.md, "The side view");
    # both empty ([]): no side view
    latent_side_pairs: list[str] = field(default_factory=lambda: ["gender*occupation"])
    latent_side_traits: list[str] = field(default_factory=lambda: ["gender"])
    # "latent" pooling: once training has kept its best epoch and calibrated it on the
    # validation users, fill the bank again from *every* user of the training data (the
    # validation users too: 18 % more images to read sources from), the EM run again on the
    # kept axes; the learnt weights, temperatures and decision record stay (docs/science.md, "The
    # bank refilled"); false: the bank holds the training split's users only
    latent_refill: bool = True
    # with the bank refilled: the calibration's and the decision rules' validation users are
    # each read through a bank refilled with the training users and the *other* half of the
    # validation users (two more refills), so they are fitted on probabilities like the ones the
    # kept model gives a new user; false: read by the checkpoint, before any refill
    calibrate_refilled: bool = True
    # the set model: epochs of adapting the encoder's top to the training images before the
    # head trains (profiler.encoders.adapted: EfficientNet-Lite2, whole image and centre crop, in
    # float, its last block trained towards the images' sources as the latent head's EM finds
    # them); 0: the frozen encoder named by ``encoder``. Experimental: it raises the instance
    # probe at the paper's size but not reliably the head (README, "Adapting the encoder")
    adapt_epochs: int = 0
    adapt_learning_rate: float = 3e-4
    # optimisation
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    decay: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 30
    batch_size: int = 16
    patience: int = 8  # epochs without a better validation mean macro-F; 0: never stop early
    head_weights: dict[str, float] = field(default_factory=lambda: {t: 1.0 for t in TRAITS})
    class_weight: str = "balanced"
    calibrate: bool = True  # fit a temperature per head on the validation split once training ends
    seed: int = 0

    def validate(self) -> "TrainConfig":
        problems = _type_problems(self)  # each setting of its kind first: the ranges below compare them
        if problems:
            raise ConfigError("invalid training configuration: " + "; ".join(problems))
        checks = [
            *((lo <= getattr(self, name) <= hi, f"{name} must be a whole number from {lo} to {hi}, "
                                                f"not {getattr(self, name)!r}") for name, (lo, hi) in WHOLE.items()),
            *((getattr(self, name) > 0, f"{name} must be a positive number, not {getattr(self, name)!r}")
              for name in POSITIVE),
            *((getattr(self, name) >= 0, f"{name} must be a number from 0 up, not {getattr(self, name)!r}")
              for name in ("decay", "weight_decay")),
            *((len(widths) <= 16 and all(1 <= n <= 65536 for n in widths),
               f"{name} must be a list of at most 16 layer widths from 1 to 65536, not {widths!r}"[:300])
              for name, widths in (("hidden", self.hidden), ("dense", self.dense))),
            (self.filters is None or all(1 <= n <= 4096 for n in self.filters),
             f"filters must be counts from 1 to 4096, not {self.filters!r}"[:300]),
            (self.model in MODELS, f"model must be one of {MODELS}, not {self.model!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, not {self.schedule!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}"),
            (self.class_weight in CLASS_WEIGHTS,
             f"class_weight must be one of {CLASS_WEIGHTS}, not {self.class_weight!r}"),
            (self.set_pooling in SET_POOLINGS,
             f"set_pooling must be one of {SET_POOLINGS}, not {self.set_pooling!r}"),
            (self.latent_start_trust is None or 0 < self.latent_start_trust < 1,
             f"latent_start_trust must be null or a number between 0 and 1, not {self.latent_start_trust!r}"),
            (self.latent_reader_l2 is None or 0 <= self.latent_reader_l2 <= 1e6,
             f"latent_reader_l2 must be null or a number from 0 to 1e6, not {self.latent_reader_l2!r}"),
            (self.latent_whiten is None or 0 < self.latent_whiten <= 1,
             f"latent_whiten must be null or a number above 0 and at most 1, not {self.latent_whiten!r}"),
            (_pairs_ok(self.latent_pairs),
             f"latent_pairs must be a list of distinct pairs of traits written 'gender*occupation' "
             f"(traits {', '.join(TRAITS)}), not {self.latent_pairs!r}"),
            (_pairs_ok(self.latent_side_pairs),
             f"latent_side_pairs must be a list of distinct pairs of traits written 'gender*occupation' "
             f"(traits {', '.join(TRAITS)}), not {self.latent_side_pairs!r}"),
            (isinstance(self.latent_side_traits, list) and len(set(map(str, self.latent_side_traits)))
             == len(self.latent_side_traits) and set(map(str, self.latent_side_traits)) <= set(TRAITS),
             f"latent_side_traits must be a list of distinct traits ({', '.join(TRAITS)}), "
             f"not {self.latent_side_traits!r}"),
            (bool(self.latent_side_pairs) == bool(self.latent_side_traits),
             "latent_side_pairs and latent_side_traits go together: give both or neither"),
            (self.encoder in _encoders(), f"encoder must be one of {tuple(_encoders())}, not {self.encoder!r}"),
            (not self.adapt_epochs or (self.model == "set" and self.encoder in ADAPTABLE),
             f"adapt_epochs adapts EfficientNet-Lite2's top for the set model (the encoder then is Lite2 "
             f"on the whole image and its centre crop, in float); it needs model 'set' and encoder one of "
             f"{ADAPTABLE}, not {self.model!r} and {self.encoder!r}"),
            (self.fit in ("pad", "crop"), f"fit must be 'pad' or 'crop', not {self.fit!r}"),
            (0 < self.val_share < 1, "val_share must be between 0 and 1"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (set(self.head_weights) == set(TRAITS), f"head_weights needs exactly the keys {TRAITS}"),
            (all(w >= 0 for w in self.head_weights.values()) and sum(self.head_weights.values()) > 0,
             f"head_weights must be numbers from 0 up, one at least above 0, not {self.head_weights!r}"[:300]),
            (self.filters is None or self.model in CONVOLUTIONS,
             f"filters sets the 3D CNNs' convolutions; the {self.model} model has none"),
            (self.filters is None or self.model not in CONVOLUTIONS
             or len(self.filters) == CONVOLUTIONS[self.model],
             f"filters needs {CONVOLUTIONS.get(self.model)} counts for {self.model} "
             f"(one per convolution), not {self.filters!r}"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ConfigError("invalid training configuration: " + "; ".join(problems))
        return self

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


#: the whole-number settings' ranges: far past any useful setting, and short of what would
#: exhaust memory or time before a message could say so (a run's ``nearest`` keeps
#: ``latent_neighbours`` indices an image; ``seed`` seeds numpy's generators)
WHOLE = {"p": (1, 1024), "size": (8, 1024), "max_images": (1, 4096), "cap": (1, 4096),
         "neighbours": (1, 1024), "neighbour_dims": (1, 65536), "bank_images": (1, 1 << 24),
         "latent_neighbours": (1, 1024), "latent_rounds": (1, 100), "adapt_epochs": (0, 100),
         "epochs": (1, 100_000), "batch_size": (1, 65536), "patience": (0, 100_000), "seed": (0, 2**32 - 1)}
#: the number settings that must be above 0
POSITIVE = ("neighbour_temperature", "latent_temperature", "latent_start_temperature", "learning_rate",
            "adapt_learning_rate")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _type_problems(config: TrainConfig) -> list[str]:
    """A message for each setting not of its kind (a file's settings come as JSON or TOML
    gives them): true or false, a whole number, a finite number (or null where ``NULLABLE``),
    text, a list of whole numbers (the layer widths), or the traits' weights; the lists of
    traits are left to ``validate``, whose messages say what they hold."""
    problems = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, bool):
            ok, kind = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, kind = _whole(value), "a whole number"
        elif isinstance(default, float) or f.name in NULLABLE:
            ok = _finite(value) or (value is None and f.name in NULLABLE)
            kind = "a finite number" + (" or null" if f.name in NULLABLE else "")
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "text"
        elif isinstance(default, dict):
            ok = isinstance(value, dict) and all(_finite(w) for w in value.values())
            kind = "a table of finite numbers"
        elif f.name in ("hidden", "dense", "filters"):
            ok = (value is None and f.name == "filters") or (
                isinstance(value, list) and all(_whole(n) for n in value))
            kind = "a list of whole numbers"
        else:  # the lists of traits, checked with their meaning in ``validate``
            continue
        if not ok:
            problems.append(f"{f.name} must be {kind}, not {value!r}"[:300])
    return problems


#: the encoders whose views and network an adapted encoder keeps (``adapt_epochs``)
ADAPTABLE = ("efficientnet_lite2_int8_centre",)


def _pairs_ok(pairs) -> bool:
    if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
        return False
    split = [tuple(sorted(p.split("*"))) for p in pairs]
    return (len(set(split)) == len(split)
            and all(len(p) == 2 and p[0] != p[1] and set(p) <= set(TRAITS) for p in split))


def _encoders() -> list[str]:
    from profiler.encoders import ENCODERS

    return list(ENCODERS)


PRESETS: dict[str, dict] = {
    "default": {},
    "paper": dict(optimizer="adam", learning_rate=0.05, schedule="inverse_time", decay=0.7,
                  epochs=100, batch_size=13, patience=0, class_weight="none",
                  sample_images=False, flip=False),
}


#: number fields that may also be null (``null``, ``none`` or ``off`` on the command line)
NULLABLE = ("latent_reader_l2", "latent_whiten", "latent_start_trust")


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _coerce(key: str, value):
    """Turn a command-line string into the type of field ``key``."""
    if not isinstance(value, str):
        return value
    if key in NULLABLE:
        return None if value.lower() in ("null", "none", "off") else float(value)
    default = TrainConfig().__getattribute__(key)
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, (list, dict)) or default is None:
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{key} must be JSON (for example [32, 64]), not {value!r}") from exc
    return value


def apply_overrides(base: dict, overrides: dict, *, source: str) -> dict:
    """``base`` updated with ``overrides``; unknown keys are errors with a suggestion."""
    known = field_names()
    out = dict(base)
    for key, value in overrides.items():
        if key not in known:
            close = suggest(key, known)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{source}: unknown setting {key!r}{hint}")
        try:
            out[key] = _coerce(key, value)
        except ValueError as exc:
            raise ConfigError(f"{source}: bad value for {key}: {exc}") from exc
    return out


#: the largest settings file read (the whole of them is a few hundred bytes)
MAX_CONFIG_BYTES = 1 << 20


def read_config_file(path: str | Path) -> dict:
    """Settings from a JSON or TOML file (by extension): a plain file of at most
    ``MAX_CONFIG_BYTES`` (a device such as /dev/zero would be read until memory runs out)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: settings must be a plain file, not a folder, device or pipe")
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: a settings file of more than {MAX_CONFIG_BYTES} bytes; "
                              "settings take a few hundred")
        text = data.decode("utf-8")
        if path.suffix == ".toml":
            import tomllib

            settings = tomllib.loads(text)
        else:
            settings = json.loads(text)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path}: cannot parse settings: {exc}") from exc
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}: settings must be an object of key: value pairs, not a {type(settings).__name__}")
    return settings


def resolve(preset: str = "default", *, file: str | Path | None = None,
            overrides: dict | None = None) -> TrainConfig:
    """The configuration: a preset, then a settings file, then explicit overrides."""
    if preset not in PRESETS:
        close = suggest(preset, list(PRESETS))
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown preset {preset!r}{hint}; expected one of {list(PRESETS)}")
    values = apply_overrides(TrainConfig().to_json(), PRESETS[preset], source=f"preset {preset}")
    values["preset"] = preset
    if file is not None:
        values = apply_overrides(values, read_config_file(file), source=str(file))
    if overrides:
        values = apply_overrides(values, overrides, source="command line")
    return TrainConfig(**values).validate()
