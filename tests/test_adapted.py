"""profiler.encoders.adapted: the encoder's top adapted to a dataset, kept in the model file."""
import json
import os

import numpy as np
import pytest

from core.errors import ConfigError, ModelFileError
from tests.helpers import make_dataset

#: a set model on the adapted encoder that trains in seconds (the real Lite2 network)
ADAPT = ("--epochs", 2, "--batch-size", 4, "-q", "--set", "hidden=[4]", "--set", "dense=[4]",
         "--set", "cap=12", "--adapt-epochs", 1)


@pytest.fixture(scope="module")
def top():
    from profiler.encoders.adapted import split_network
    from profiler.encoders.efficientnet_lite import EfficientNetLite2Encoder

    return split_network(EfficientNetLite2Encoder().network)[1]


def test_whitened_sources_without_whitening_is_the_plain_em():
    from profiler.models.latent import fit_sources, layout, whitened_sources

    rng = np.random.default_rng(0)
    standard = rng.normal(size=(60, 6))
    projection = rng.normal(size=(6, 4))
    labels = np.stack([rng.integers(0, 2, 60), rng.integers(0, 3, 60)], axis=1)
    plan = layout((2, 3))
    axes, projected, sources = whitened_sources(standard, projection, labels, plan, k=5, temperature=0.1, rounds=3)
    unit = projected / np.linalg.norm(projected, axis=1, keepdims=True)
    plain = fit_sources(unit, labels, plan, k=5, temperature=0.1, rounds=3)
    assert axes is projection and np.allclose(projected, standard @ projection)
    assert np.allclose(sources.responsibilities, plain.responsibilities)
    assert np.allclose(sources.responsibilities.sum(axis=1), 1.0)
    whitened = whitened_sources(standard, projection, labels, plan, k=5, temperature=0.1, rounds=3, whiten=0.3)
    assert whitened[0].shape == (6, 4) and not np.allclose(whitened[0], projection)


def test_top_weights_file_round_trip_and_bad_files(tmp_path, top):
    from profiler.encoders.adapted import read_top, save_top, set_top, weights_digest

    path = save_top(top, tmp_path / "top.npz")
    arrays = read_top(path)
    assert [a.shape for a in arrays] == [tuple(w.shape) for w in top.weights]
    assert all(np.array_equal(a, np.asarray(w)) for a, w in zip(arrays, top.weights))
    assert weights_digest(arrays) == weights_digest([np.asarray(w) for w in top.weights])
    assert weights_digest(arrays) != weights_digest([a * 1.001 for a in arrays])

    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ModelFileError, match=r"junk.npz: not an adapted top weights file"):
        read_top(tmp_path / "junk.npz")
    np.savez(tmp_path / "objects.npz", w000=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ModelFileError, match=r"objects.npz: not an adapted top weights file"):
        read_top(tmp_path / "objects.npz")  # a pickle is never loaded
    np.savez(tmp_path / "names.npz", kernel=np.zeros(3, np.float32))
    with pytest.raises(ModelFileError, match=r"names.npz: not an adapted top weights file \(float arrays"):
        read_top(tmp_path / "names.npz")
    np.savez(tmp_path / "nan.npz", w000=np.array([np.nan], np.float32))
    with pytest.raises(ModelFileError, match=r"nan.npz: the adapted top weights hold NaN or infinite values"):
        read_top(tmp_path / "nan.npz")
    with pytest.raises(ModelFileError, match=r"missing.npz: no such adapted top weights file"):
        read_top(tmp_path / "missing.npz")
    with pytest.raises(ModelFileError, match=r"short: not the weights of EfficientNet-Lite2's top \(2 arrays"):
        set_top(top, arrays[:2], "short")


def test_adapted_encoder_identity_covers_the_weights_and_reloads_identically(tmp_path, top):
    from PIL import Image

    from profiler.encoders import get_encoder
    from profiler.encoders.adapted import AdaptedEncoder, save_top, top_features

    installed = [np.asarray(w) for w in top.weights]
    changed = [w.copy() for w in installed]
    changed[0] = changed[0] * 0.5  # the first convolution of the last block
    first, second = AdaptedEncoder(changed), AdaptedEncoder.from_file(save_top(top, tmp_path / "t.npz"))
    assert first.identity != second.identity and first.identity.startswith("efficientnet_lite2_adapted:")
    assert first.identity != get_encoder().identity
    again = AdaptedEncoder.from_file(save_top(top, tmp_path / "t2.npz"))
    assert again.identity == second.identity  # the weights', not the file's, digest

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)) for _ in range(3)]
    inputs = np.stack([first.preprocess(im) for im in images])
    assert inputs.shape == (3, 2, 260, 260, 3)
    out = first.embed(inputs)
    reloaded = AdaptedEncoder(first.top.get_weights())
    assert reloaded.identity == first.identity
    assert np.array_equal(out, reloaded.embed(inputs))  # saved and reloaded: identical embeddings
    assert not np.allclose(out, second.embed(inputs), atol=1e-3)
    # the embedding from the activations at the cut is the encoder's (as training reads it)
    from profiler.encoders.adapted import split_network

    bottom, _ = split_network(first.base.network)
    activations = np.asarray(bottom.predict_on_batch(inputs.reshape(-1, 260, 260, 3))).reshape(3, 2, 9, 9, -1)
    assert np.allclose(top_features(first.top, activations, 2), out, rtol=1e-4, atol=1e-4)


def test_adapt_config_is_checked():
    from profiler.config import resolve

    assert resolve("default", overrides={"model": "set"}).adapt_epochs == 0
    with pytest.raises(ConfigError, match=r"adapt_epochs adapts EfficientNet-Lite2's top for the set model"):
        resolve("default", overrides={"model": "model1", "adapt_epochs": 2})
    with pytest.raises(ConfigError, match=r"needs model 'set' and encoder one of \('efficientnet_lite2_int8_centre',\)"):
        resolve("default", overrides={"model": "set", "adapt_epochs": 2, "encoder": "efficientnet_lite0_int8"})
    with pytest.raises(ConfigError, match=r"adapt_epochs must be a whole number from 0 to 100"):
        resolve("default", overrides={"model": "set", "adapt_epochs": -1})


@pytest.fixture(scope="module")
def adapted_run(tmp_path_factory):
    """A set model trained with --adapt-epochs 1 on 16 users of 3 images each."""
    from click.testing import CliRunner

    from cli.main import main

    root = tmp_path_factory.mktemp("adapt")
    data = make_dataset(root / "d", {f"u{i:02d}": 3 for i in range(16)}, size=(48, 32))
    run = root / "run"
    result = CliRunner().invoke(main, [str(a) for a in ("train", data, "--run-dir", run, *ADAPT,
                                                        "--embeddings", root / "store.sqlite")])
    assert result.exit_code == 0, result.output
    return data, run, root / "store.sqlite"


def test_training_with_adaptation_keeps_the_encoder_in_the_model(adapted_run, tmp_path):
    from profiler.embeddings import EmbeddingStore
    from profiler.models.io import load_model, model_info
    from profiler.prediction import Predictor

    data, run, store = adapted_run
    assert json.loads((run / "config.json").read_text())["adapt_epochs"] == 1
    saved = list((run / "cache").glob("adapted-top-*.npz"))
    assert len(saved) == 1 and not list((run / "cache").glob("*adapt-activations-*"))  # the scratch is gone
    model = load_model(run / "model.keras")
    info = model_info(model)
    assert info["encoder_top"] and info["encoder"].startswith("efficientnet_lite2_adapted:")
    from profiler.encoders.adapted import read_top

    kept = model.encoder_top_weights()
    assert all(np.array_equal(a, b) for a, b in zip(kept, read_top(saved[0])))
    predictor = Predictor.load(run / "model.keras", store=EmbeddingStore(tmp_path / "fresh.sqlite"))
    assert predictor.reader.encoder.identity == info["encoder"]  # the model's own encoder, rebuilt
    with EmbeddingStore(store) as opened:  # training stored every image's adapted embedding (by content:
        assert opened.count(info["encoder"]) == 3  # every user's three images are the same three colours)


def test_prediction_on_the_adapted_encoder_is_repeatable(adapted_run, tmp_path):
    from click.testing import CliRunner

    from cli.main import main

    data, run, _ = adapted_run
    outputs = []
    for k in range(2):  # a fresh embedding store each time: the images are embedded by the model's encoder
        out = tmp_path / f"p{k}.csv"
        result = CliRunner().invoke(main, ["predict", str(data), "--model", str(run / "model.keras"), "-q",
                                           "--embeddings", str(tmp_path / f"s{k}.sqlite"), "-o", str(out)])
        assert result.exit_code == 0, result.output
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and len(json.loads(outputs[0])) == 16


def test_embed_names_a_model_file_and_embeds_with_its_adapted_encoder(adapted_run, tmp_path):
    """``profiler embed --encoder RUN/model.keras``: the rows carry the model's own encoder
    identity and the very vectors training stored; a model that embeds nothing is refused."""
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from cli.main import main
    from profiler.embeddings import EmbeddingStore
    from profiler.models.io import load_model, model_info

    data, run, store = adapted_run
    identity = model_info(load_model(run / "model.keras"))["encoder"]
    out = tmp_path / "e.parquet"
    result = CliRunner().invoke(main, ["embed", str(data), "--encoder", str(run / "model.keras"), "-o", str(out),
                                       "--embeddings", str(tmp_path / "fresh.sqlite"), "-q"])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pandas()
    assert len(rows) == 48 and set(rows["encoder"]) == {identity}
    digests = [bytes.fromhex(d) for d in rows["digest"]]
    with EmbeddingStore(store) as opened:
        kept = opened.get(identity, digests)
    # the same vectors up to float32 rounding (training ran the top on other batches)
    assert all(np.allclose(np.asarray(v, np.float32), kept[d], rtol=1e-5, atol=1e-5)
               for d, v in zip(digests, rows["vector"]))
    volume = tmp_path / "m1"
    result = CliRunner().invoke(main, ["train", str(data), "--model", "model1", "--run-dir", str(volume),
                                       "--epochs", "1", "--size", "16", "-q"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["embed", str(data), "--encoder", str(volume / "model.keras"), "-o", str(out)])
    assert result.exit_code == 1
    assert f"{volume / 'model.keras'}: a model1 model, which embeds no images" in result.output


def test_adaptation_is_reused_and_a_failure_leaves_nothing(adapted_run, tmp_path, monkeypatch):
    import profiler.encoders.adapted as adapted
    from data_prep.dataset import load_dataset
    from profiler.config import resolve
    from profiler.embeddings import EmbeddingStore

    data, run, _ = adapted_run
    config = resolve("default", overrides={"model": "set", "adapt_epochs": 1, "cap": 12, "hidden": [4],
                                           "dense": [4], "epochs": 2, "batch_size": 4})
    dataset = load_dataset(data)

    def fail(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(adapted, "split_network", fail)  # reused: the network never runs
    with EmbeddingStore(tmp_path / "s.sqlite") as store:
        encoder = adapted.adapt_encoder(dataset, config, store, work=run / "cache", progress=False)
    from profiler.models.io import load_model, model_info

    assert encoder.identity == model_info(load_model(run / "model.keras"))["encoder"]
    monkeypatch.undo()
    with EmbeddingStore(tmp_path / "s1.sqlite") as store:  # adapted again elsewhere: the same weights
        again = adapted.adapt_encoder(dataset, config, store, work=tmp_path / "again", progress=False)
    assert again.identity == encoder.identity
    monkeypatch.setattr(adapted, "adapt_top", fail)  # a failure mid-way: no top saved, no scratch left
    work = tmp_path / "work"
    # and what a run killed outright (no finally) left is removed; a live process's is kept
    work.mkdir()
    name = f".adapt-activations-{adapted.adaptation_key(dataset, config)}.npy"
    (work / f"{name}.{dead_pid()}.scratch.tmp.npy").write_bytes(b"\0" * 1000)
    (work / f"{name}.{os.getppid()}.scratch.tmp.npy").write_bytes(b"\0" * 1000)
    with EmbeddingStore(tmp_path / "s2.sqlite") as store, pytest.raises(RuntimeError, match="killed"):
        adapted.adapt_encoder(dataset, config, store, work=work, progress=False)
    assert sorted(p.name for p in work.iterdir()) == [f"{name}.{os.getppid()}.scratch.tmp.npy"]


def dead_pid() -> int:
    """A process id that no process has now."""
    for pid in range(4_000_000, 3_000_000, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free process id")


def test_a_model_file_claiming_huge_held_weights_is_refused(tmp_path):
    """A hostile model config cannot make loading allocate gigabytes."""
    from profiler.models.set_head import HeldWeights

    with pytest.raises(ValueError, match=r"held weights must be at most 1000 arrays of at most 16000000 values"):
        HeldWeights([[100000, 100000]])
    with pytest.raises(ValueError, match=r"held weights' shapes must be lists of whole numbers"):
        HeldWeights([["x"]])
    with pytest.raises(ValueError, match=r"held weights must be"):
        HeldWeights([[0, 3]])
    held = HeldWeights([[2, 3], [4]])
    held.assign([np.ones((2, 3)), np.arange(4.0)])
    assert [a.tolist() for a in held.arrays()] == [[[1.0] * 3] * 2, [0.0, 1.0, 2.0, 3.0]]
    with pytest.raises(ValueError, match="the arrays do not have the held weights' shapes"):
        held.assign([np.ones((3, 2)), np.arange(4.0)])


def test_a_diverging_adaptation_is_an_error_not_a_model(tmp_path, monkeypatch):
    import profiler.encoders.adapted as adapted
    from data_prep.dataset import load_dataset
    from profiler.config import resolve
    from profiler.embeddings import EmbeddingStore

    def diverge(top, *args, **kwargs):  # what a too large learning rate ends in
        weights = top.get_weights()
        weights[0][...] = np.nan
        top.set_weights(weights)

    monkeypatch.setattr(adapted, "adapt_top", diverge)
    data = make_dataset(tmp_path / "d", {f"u{i:02d}": 2 for i in range(8)}, size=(40, 40))
    config = resolve("default", overrides={"model": "set", "adapt_epochs": 1, "adapt_learning_rate": 0.5})
    with EmbeddingStore(tmp_path / "s.sqlite") as store, pytest.raises(
            ConfigError, match=r"adapting the encoder diverged .* at learning rate 0.5; try a smaller "
                               r"adapt_learning_rate"):
        adapted.adapt_encoder(load_dataset(data), config, store, work=tmp_path / "w", progress=False)
    assert list((tmp_path / "w").iterdir()) == []  # no top kept, no scratch left
