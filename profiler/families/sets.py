"""The default family: a frozen pretrained encoder embeds each image once; a head reads
a user's embeddings as a set of up to ``cap`` (masked, never filled).

Training reads ``EmbeddedData`` (the dataset's embeddings through the embedding cache);
prediction embeds the users' images through the same cache. A user's input is built by
``user_sets`` in both: the first ``cap`` embeddings, or a random choice of ``cap`` of
them (training, ``--tta``); the model is order-invariant, so only subsets differ.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from core.errors import ConfigError, DataError, ModelFileError
from core.labels import LABELS, TRAITS
from profiler.families.base import Family, Reader

log = logging.getLogger("profiler")

#: images embedded per user for ``--tta`` (the random choices are drawn among these)
TTA_MAX_IMAGES = 32


def pack_set(vectors: np.ndarray, cap: int, indices: np.ndarray | None = None) -> np.ndarray:
    """One user's (k, dim) embeddings as the model's (cap, dim + 1) input (the last column: the mask).

    ``indices`` chooses which (at most ``cap``) rows to use; by default the first ``cap``.
    """
    if indices is None:
        indices = np.arange(min(len(vectors), cap))
    out = np.zeros((cap, vectors.shape[1] + 1), np.float32)
    out[:len(indices), :-1] = vectors[indices]
    out[:len(indices), -1] = 1.0
    return out


def user_sets(vectors: np.ndarray, cap: int, rng: np.random.Generator | None = None,
              draws: int = 1) -> np.ndarray:
    """``draws`` packed sets (draws, cap, dim + 1) of one user; random subsets if ``rng`` and
    the user has more than ``cap`` images (otherwise every draw is the same set)."""
    if rng is None or len(vectors) <= cap:
        return np.repeat(pack_set(vectors, cap)[None], draws, axis=0)
    return np.stack([pack_set(vectors, cap, np.sort(rng.choice(len(vectors), cap, replace=False)))
                     for _ in range(draws)])


class SetReader(Reader):
    """Embeds each user's images through the embedding cache; packs their sets."""

    def __init__(self, info: dict, encoder, store):
        self.info, self.encoder, self.store = info, encoder, store
        self.max_images = int(info["cap"])

    def featurize(self, users, tta, *, workers=1, pool=None):
        from profiler.embeddings import embed_users

        most = self.max_images if tta <= 1 else max(self.max_images, TTA_MAX_IMAGES)
        return embed_users(users, self.encoder, self.store, max_images=most)

    def inputs(self, user, tta, seed):
        if tta <= 1 or len(user.vectors) <= self.max_images:
            return user_sets(user.vectors, self.max_images)
        rng = np.random.default_rng([seed, zlib.crc32(user.user_id.encode())])
        return user_sets(user.vectors, self.max_images, rng, draws=tta)

    def ablations(self, user, drops=None):
        """Images taken out of the set (the head reads any subset as it is)."""
        n = min(len(user.vectors), self.max_images)
        drops = [()] + [(j,) for j in range(n)] if drops is None else drops
        every = np.arange(n)
        return (np.stack([pack_set(user.vectors, self.max_images, np.delete(every, list(d))) for d in drops]),
                list(user.used[:n]))

    def close(self):
        self.store.close()


class SetFamily(Family):
    name = "sets"
    models = ("set",)

    def training_data(self, source, config, *, cache_dir=None, store=None, workers=None,
                      allow_missing=False, progress=True, encoder=None):
        """The dataset at ``source`` as image embeddings, through the embedding cache ``store``.

        With ``config.adapt_epochs``, the encoder's top is first adapted to the dataset's
        training users (``profiler.encoders.adapted.adapt_encoder``, working in ``cache_dir``)
        and the embeddings are the adapted encoder's; the data carries its weights
        (``encoder_top``) for the model to keep."""
        from data_prep.dataset import find_truth, load_dataset
        from profiler.embeddings import EmbeddedData, EmbeddingStore

        source = Path(source)
        if (source / "meta.json").is_file():
            raise DataError(f"{source}: a prepared image cache; the set model embeds the original "
                            "images, so give it the dataset folder")
        if find_truth(source) is None:
            raise DataError(f"{source}: no truth.txt, truth.csv or truth.jsonl; training needs labels")
        dataset = load_dataset(source, missing="warn" if allow_missing else "error")

        def build(opened):
            chosen = encoder
            if config.adapt_epochs and encoder is None:  # the encoder's top adapted to these users first
                from profiler.embeddings import default_store_path
                from profiler.encoders.adapted import adapt_encoder

                work = Path(cache_dir) if cache_dir is not None else default_store_path().parent / "adapt"
                chosen = adapt_encoder(dataset, config, opened, work=work, progress=progress)
            data = EmbeddedData.for_training(dataset, config, opened, encoder=chosen, progress=progress)
            data.encoder_top = getattr(chosen, "arrays", None)
            return data

        if isinstance(store, EmbeddingStore):
            return build(store)
        with EmbeddingStore(store) as opened:
            return build(opened)

    def accepts(self, data):
        from profiler.embeddings import EmbeddedData

        return isinstance(data, EmbeddedData)

    def build(self, config, data=None, positions=None):
        """The set model; its standardisation (and bank of training images) from the users at ``positions``."""
        from profiler.models.set_head import SetProfiler

        if data is None:
            raise ValueError("the set model is built from embeddings: give data")
        positions = np.arange(len(data)) if positions is None else positions
        if config.set_pooling in ("neighbours", "latent"):  # the bank's users
            positions = bank_users(data, positions, config.bank_images, config.seed)
        rows = _images(data, positions)
        neighbours = None
        if config.set_pooling == "neighbours":
            neighbours = {"size": len(rows), "dims": min(config.neighbour_dims, *rows.shape),
                          "k": config.neighbours, "temperature": config.neighbour_temperature}
        elif config.set_pooling == "latent":
            neighbours = {"size": len(rows), "dims": min(config.neighbour_dims, *rows.shape),
                          "k": config.latent_neighbours, "temperature": config.latent_temperature,
                          "reader": config.latent_reader_l2 is not None,
                          "pairs": _pairs(config.latent_pairs),
                          **({"side_pairs": _pairs(config.latent_side_pairs),
                              "side_traits": [TRAITS.index(t) for t in config.latent_side_traits]}
                             if config.latent_side_traits else {}),
                          "reader_l2": config.latent_reader_l2 or 0.0}
        try:
            model = SetProfiler(data.dim, cap=config.cap, encoder=data.encoder, hidden=tuple(config.hidden),
                                dense=tuple(config.dense), dropout=config.dropout, pooling=config.set_pooling,
                                mean=rows.mean(axis=0), variance=rows.var(axis=0), neighbours=neighbours,
                                encoder_top=None if data.encoder_top is None else [list(a.shape) for a in data.encoder_top])
        except ValueError as e:
            if neighbours is None or "out of range" not in str(e):
                raise
            raise ConfigError(f"a bank of {len(rows):,} images on {neighbours['dims']} axes is more than a model "
                              f"holds; lower bank_images (now {config.bank_images:,}) or neighbour_dims") from None
        if data.encoder_top is not None:
            model.encoder_top.assign(data.encoder_top)
        if config.set_pooling == "neighbours":
            fill_bank(model, data, positions, rows, config.seed)
        elif config.set_pooling == "latent":
            fill_sources(model, data, positions, rows, config.seed, rounds=config.latent_rounds,
                         balanced=config.class_weight == "balanced", whiten=config.latent_whiten,
                         start=_start(config))
        return model

    def split(self, model, data, positions):
        """A model whose first stage never learns: that stage runs once per image here."""
        fixed = model.fixed_stage()
        if fixed is None:
            return model, data
        stage, head = fixed
        return head, data.mapped(stage, positions)

    def batch(self, data, chosen, config, rng):
        sample = rng if config.sample_images else None
        return np.concatenate([user_sets(data.user_images(int(i)), config.cap, sample) for i in chosen])

    def input_spec(self, data, config):
        import tensorflow as tf

        return tf.TensorSpec((None, config.cap, data.dim + 1), tf.float32)

    def runner(self, model):
        """A user's items for the out-of-distribution score are its image embeddings."""
        def run(chunk):
            return model.predict_on_batch(chunk), [row[row[:, -1] > 0, :-1] for row in chunk]
        return run

    def ood_train_items(self, model, data, positions, config):
        return _images(data, positions)

    def finish(self, model, data, positions, config):
        """The "latent" model's bank refilled from every user at ``positions`` (the training
        data's, validation users too: ``refill_sources``; at most ``bank_images`` images, as
        ``build`` chooses them) unless ``latent_refill`` is false or the bank is full already."""
        from profiler.models import set_head

        if model.pooling != "latent" or not config.latent_refill:
            return model
        positions = bank_users(data, positions, config.bank_images, config.seed)
        layer, images = model.get_layer("neighbours"), int(data.counts[positions].sum())
        if images <= layer.size:  # nothing to add: the training split filled it to bank_images already
            log.info("the bank is not refilled: it holds %d images already, as many as the %d a refill "
                     "would give it (bank_images %d)", layer.size, images, config.bank_images)
            return model
        if images * (layer.dims + layer.width) > set_head.MAX_BANK_VALUES:
            log.warning("the bank is not refilled with the validation users' images: %d images are more than "
                        "a bank holds (%d values at most); it keeps the training users' %d", images,
                        set_head.MAX_BANK_VALUES, layer.size)
            return model
        log.info("refilling the bank with the images of %d users", len(positions))
        return refill_sources(model, data, positions, rounds=config.latent_rounds, start=_start(config))

    def reader(self, info, *, name="model", encoder=None, store=None, model=None):
        from profiler.embeddings import EmbeddingStore

        needed = info["encoder"]
        encoder = encoder or model_encoder(info, model, name)
        if encoder.identity != needed:
            raise ModelFileError(f"{name}: this model was trained on embeddings from encoder {needed}, "
                                 f"but the encoder given is {encoder.identity}; embeddings from another "
                                 "encoder (or other weights) mean nothing to it")
        if not isinstance(store, EmbeddingStore):
            store = EmbeddingStore(store)
        return SetReader(info, encoder, store)


def encoder_from(name: str):
    """The encoder ``name`` names: a registered encoder's name (``get_encoder``), or the path of
    a set model's ``.keras`` file, whose encoder it is (its adapted encoder where it keeps one),
    so that ``profiler embed`` fills the cache with what that model reads."""
    from profiler.encoders import get_encoder

    if not name.endswith(".keras"):
        return get_encoder(name)
    from profiler.models.io import load_model, model_info

    model = load_model(name)  # a file that is not a model: ModelFileError, naming it
    info = model_info(model)
    if info["variant"] != "set":
        raise ModelFileError(f"{name}: a {info['variant'] or 'Keras'} model, which embeds no images; give "
                             "a set model's model.keras, or an encoder's name")
    return model_encoder(info, model, name)


def model_encoder(info: dict, model, name: str = "model"):
    """The encoder a set model (``info``: its ``model_info``) reads with: the adapted encoder
    its file keeps (``model``, loaded, needed for it), else the registered one it names."""
    from profiler.encoders import get_encoder

    if not info.get("encoder_top"):
        return get_encoder(info["encoder"])
    from profiler.encoders.adapted import AdaptedEncoder

    if model is None:
        raise ModelFileError(f"{name}: this model keeps its adapted encoder; load it with the model")
    return AdaptedEncoder(model.encoder_top_weights(), source=f"{name} (its adapted encoder)")


def _pairs(pairs: list[str]) -> list[list[int]]:
    """Pairs of traits written 'gender*occupation' as pairs of trait positions."""
    return [sorted(TRAITS.index(t) for t in pair.split("*")) for pair in pairs]


def bank_users(data, positions: np.ndarray, most: int, seed: int) -> np.ndarray:
    """The users at ``positions`` whose images fill a bank of at most ``most`` images: all
    of them where their images are no more, else a choice of them stratified by their
    labels (``stratified_order``, seeded by ``seed``), in position order."""
    positions = np.asarray(positions, np.int64)
    if int(data.counts[positions].sum()) <= most:
        return positions
    order = stratified_order(data, positions, seed)
    chosen = order[np.cumsum(data.counts[order]) <= most]
    if not len(chosen):
        raise ConfigError(f"bank_images is {most:,}: fewer than the images of one user "
                          f"({int(data.counts[order[0]])}); give at least as many as a user has")
    return np.sort(chosen)


def stratified_order(data, positions: np.ndarray, seed: int) -> np.ndarray:
    """``positions`` in an order whose every prefix keeps about each label combination's share
    of them: a seeded permutation, then each user placed at ``(rank + 1/2) / n``, its rank among
    its combination's ``n`` users (systematic stratified sampling). A prefix ending at place
    ``f`` holds ``round(f * n)`` users of each combination, so its users of a combination of
    share ``s`` are within ``1/2 + s * K/2`` of ``s`` times its length (``K`` combinations)."""
    order = np.random.default_rng([seed, 0xBA4C]).permutation(np.asarray(positions, np.int64))
    combination = np.stack([data.labels(t)[order] for t in TRAITS], axis=1)
    _, key, size = np.unique(combination, axis=0, return_inverse=True, return_counts=True)
    key = np.asarray(key).ravel()
    place = np.zeros(len(order))
    for k in range(len(size)):
        place[key == k] = (np.arange(size[k]) + 0.5) / size[k]
    return order[np.argsort(place, kind="stable")]


def _images(data, positions: np.ndarray) -> np.ndarray:
    """(images, dim): the image embeddings of the users at ``positions``, user after user."""
    return np.concatenate([data.user_images(int(i)) for i in positions])


def _standardised(model, rows: np.ndarray) -> np.ndarray:
    """``rows`` (images, dim) standardised as the model's first layer does."""
    return np.asarray(model.get_layer("standardize")(rows), np.float32).reshape(rows.shape)


def _bank_rows(model, rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training images standardised as the model does, and their principal axes (dim, dims)."""
    from sklearn.decomposition import PCA

    standard = _standardised(model, rows)
    pca = PCA(model.get_layer("neighbours").dims, svd_solver="randomized", random_state=seed).fit(standard)
    return standard, pca.components_.T


def _class_priors(data, positions: np.ndarray) -> list[np.ndarray]:
    """Each trait's class shares among the users at ``positions`` (add-one smoothed)."""
    out = []
    for t in TRAITS:
        k = len(LABELS[t])
        out.append((np.bincount(data.labels(t)[positions], minlength=k) + 1.0) / (len(positions) + k))
    return out


def fill_bank(model, data, positions: np.ndarray, rows: np.ndarray, seed: int) -> None:
    """Put the training images (``rows``, of the users at ``positions``) in the model's bank.

    Standardised as the model does, projected on their principal axes, labelled with
    their users' labels; the prior is each class's share of those users (add-one smoothed).
    """
    layer = model.get_layer("neighbours")
    standard, projection = _bank_rows(model, rows, seed)
    owner = np.repeat(positions, data.counts[positions])
    onehots = [np.eye(len(LABELS[t]), dtype=np.float32)[data.labels(t)[owner]] for t in TRAITS]
    layer.set_bank(projection, standard, np.concatenate(onehots, axis=1),
                   np.concatenate(_class_priors(data, positions)))


def _start(config) -> tuple | None:
    """The EM's start from the configuration (``profiler.models.latent.Start``), or None."""
    if config.latent_start_trust is None:
        return None
    return config.latent_start_trust, config.latent_start_temperature, config.latent_start_by_rank


def _image_labels(data, positions: np.ndarray) -> np.ndarray:
    """(images, traits): each image's user's labels, the users at ``positions`` in order."""
    owner = np.repeat(positions, data.counts[positions])
    return np.stack([data.labels(t)[owner] for t in TRAITS], axis=1)


def _em_views(layer, standard: np.ndarray, projection: np.ndarray, labels: np.ndarray, *, rounds: int,
              whiten: float | None, start) -> tuple[np.ndarray, np.ndarray, list]:
    """The EM of ``fill_sources`` on the axes ``projection`` (whitened after a first EM with
    ``whiten``), then the side view's on the final axes where the layer has one: the final
    axes, the rows on them and each view's ``Sources``."""
    from profiler.models.latent import layout, whitened_sources

    settings = dict(k=layer.k, temperature=layer.temperature, alpha=layer.alpha, rounds=rounds, start=start)
    projection, projected, sources = whitened_sources(standard, projection, labels,
                                                      layout(layer.classes, layer.pairs), whiten=whiten, **settings)
    views = [sources]
    if layer.side_traits:  # the side view: the EM again on the same axes, with the side pairs
        views.append(whitened_sources(standard, projection, labels, layout(layer.classes, layer.side_pairs),
                                      **settings)[2])
    return projection, projected, views


def _set_sources(model, projection: np.ndarray, standard: np.ndarray, views: list, spread: np.ndarray) -> None:
    """Put the bank images ``standard`` with their sources (``views``) in the model: the
    emission in the bank, or in the learnt source reader where the model has one (the bank
    then gets the axes' ``spread``)."""
    layer = model.get_layer("neighbours")
    responsibilities = layer.padded(*(v.responsibilities for v in views))
    pi = layer.padded(*(v.pi for v in views))
    emission = layer.padded(*(v.emission for v in views))
    if layer.reader:  # the emission moves to the learnt reader; the bank gives it unit-spread axes
        layer.set_bank(projection, standard, responsibilities, pi, spread=spread)
        model.get_layer("reader").emission.assign(emission)
    else:
        layer.set_bank(projection, standard, responsibilities, pi, emission)


def fill_sources(model, data, positions: np.ndarray, rows: np.ndarray, seed: int, *, rounds: int,
                 balanced: bool, whiten: float | None = None, start: tuple | None = None) -> None:
    """The "latent" pooling's bank: the training images (as ``fill_bank``) with their sources
    learnt by EM from their users' labels (``profiler.models.latent.fit_sources``), the
    emission (in the bank, or in the learnt source reader where the model has one), and the
    posterior's starting bias: none where training weighs the classes equally (``balanced``:
    the model's outputs are then balanced, as prediction's prior shift expects), else the
    combinations' log prior (the product of the traits' smoothed class shares).

    ``whiten`` (a shrinkage share, or None): after the EM, the principal axes are whitened
    by the spread within the sources it found (``profiler.models.latent.within_whitening``)
    and the EM runs again on them; the bank keeps the whitened axes. A layer with a side
    view (``side_traits``) gets the EM once more on the final axes, with its own pairs.
    ``start`` (trust, temperature, by rank: ``profiler.models.latent.Start``), or None: every
    EM's first round reads the neighbours' labels (``profiler.models.latent.label_reading``)."""
    standard, projection = _bank_rows(model, rows, seed)
    projection, projected, views = _em_views(model.get_layer("neighbours"), standard, projection,
                                             _image_labels(data, positions), rounds=rounds, whiten=whiten,
                                             start=start)
    _set_sources(model, projection, standard, views, np.maximum(projected.std(axis=0), 1e-6))
    if balanced:
        return  # the bias starts at zero
    priors = _class_priors(data, positions)
    log_prior = np.log(priors[0])
    for p in priors[1:]:
        log_prior = np.add.outer(log_prior, np.log(p))
    model.get_layer("posterior").bias.assign(log_prior.ravel().astype(np.float32))


def refill_sources(model, data, positions: np.ndarray, *, rounds: int, start: tuple | None = None):
    """A copy of the trained "latent" ``model`` whose bank holds the images of the users at
    ``positions`` (all the training data's users, the validation split's too), their
    sources found by the EM again (``fill_sources``' EMs, main view and side view) on the
    model's own axes; everything else is the model's: its standardisation, axes and
    their spread (so the learnt reader reads the images as it learnt to), learnt weights,
    temperatures, decision record and out-of-distribution record, and adapted encoder.

    The training split's model reads sources from the training users' images only, and
    the validation users stay unseen to fit the calibration and the decision rules; once
    those are fitted, the validation users' images only add to what the sources are read
    from (docs/science.md, "The bank refilled")."""
    from profiler.models.set_head import SetProfiler

    rows = _images(data, positions)
    config = model.get_config()
    config["neighbours"] = {**config["neighbours"], "size": len(rows)}
    new = SetProfiler.from_config(config)
    for layer in model.layers:
        if layer.name != "neighbours" and layer.weights:
            new.get_layer(layer.name).set_weights(layer.get_weights())
    if model.encoder_top is not None:
        new.encoder_top.assign(model.encoder_top_weights())
    old, layer = model.get_layer("neighbours"), new.get_layer("neighbours")
    projection = np.asarray(old.projection)
    standard = _standardised(model, rows)
    projection, _, views = _em_views(layer, standard, projection, _image_labels(data, positions), rounds=rounds,
                                     whiten=None, start=start)
    _set_sources(new, projection, standard, views, np.asarray(old.spread) if old.reader else None)
    return new


SETS = SetFamily()
