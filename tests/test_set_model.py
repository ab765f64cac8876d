"""The set model: a head over a user's image embeddings (with the "tiny" test encoder)."""
import dataclasses
import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from core.errors import ModelFileError
from profiler.families.sets import pack_set
from profiler.models.set_head import SetProfiler
from tests.helpers import interrupt_after, make_dataset


#: "latent": with the learnt source reader (the default) and gender-occupation pair sources
#: (latent_pairs ["gender*occupation"]); "latent-bank": with neither (as models trained with
#: latent_reader_l2 null, and as the first latent models were saved); "latent-side": the reader
#: and a side view of the sources with those pairs, read for gender (latent_side_pairs,
#: latent_side_traits)
POOLINGS = ["mean", "sum", "max", "meanmax", "attention", "evidence", "neighbours", "latent", "latent-bank",
            "latent-side"]
LATENTS = ["latent", "latent-bank", "latent-side"]


def small_model(pooling="meanmax", dim=8, cap=6):
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    reader, side = pooling in ("latent", "latent-side"), pooling == "latent-side"
    pooling = "latent" if pooling in LATENTS else pooling
    pairs = ({"reader": True, "side_pairs": [[0, 2]], "side_traits": [0]} if side
             else {"reader": True, "pairs": [[0, 2]]} if reader else {})  # latent_pairs ["gender*occupation"]
    bank = ({"size": 10, "dims": 4, "k": 3, "temperature": 0.5, **pairs}
            if pooling in ("neighbours", "latent") else None)
    model = SetProfiler(dim, cap=cap, encoder="tiny@test", hidden=(4,), dense=(4,), dropout=0.0,
                        pooling=pooling, mean=rng.normal(size=dim), variance=rng.uniform(0.5, 2, dim),
                        neighbours=bank)
    if pooling == "latent":  # ten bank images with random sources, a random prior over the combinations
        from profiler.models.latent import layout

        plans = [layout((2, 6, 8), [(0, 2)] if reader and not side else ())] + [layout((2, 6, 8), [(0, 2)])] * side
        views = []
        for plan in plans:
            r = rng.dirichlet(np.ones(plan.sources), size=10)
            views.append((r, r.mean(axis=0), plan.allowed * rng.dirichlet(np.ones(plan.kinds))[plan.kind] / r.mean(axis=0)))
        layer = model.get_layer("neighbours")
        r, pi, emission = (layer.padded(*parts) for parts in zip(*views))
        width = layer.width
        assert ([p.sources for p in plans], width) == (([17, 33], 80) if side else ([33], 48) if reader else ([17], 32))
        if reader:  # and a random correction, so that the reader shows
            layer.set_bank(rng.normal(size=(dim, 4)), rng.normal(size=(10, dim)), r, pi, spread=rng.uniform(0.5, 2, 4))
            model.get_layer("reader").emission.assign(emission)
            model.get_layer("reader").kernel.assign(rng.normal(size=(4, width)))
            model.get_layer("reader").bias.assign(rng.normal(size=width))
        else:
            layer.set_bank(rng.normal(size=(dim, 4)), rng.normal(size=(10, dim)), r, pi, emission)
        model.get_layer("posterior").bias.assign(rng.normal(size=96))
    elif bank:  # ten bank images with random labels, and non-zero heads so that evidence shows
        labels = np.concatenate([np.eye(k)[rng.integers(k, size=10)] for k in (2, 6, 8)], axis=1)
        model.get_layer("neighbours").set_bank(rng.normal(size=(dim, 4)), rng.normal(size=(10, dim)),
                                               labels, np.concatenate([np.full(k, 1 / k) for k in (2, 6, 8)]))
        for t in ("gender", "location", "occupation"):
            kernel = model.get_layer(t).kernel
            kernel.assign(rng.normal(size=kernel.shape))
    return model


@pytest.mark.parametrize("pooling", POOLINGS)
def test_invariant_to_order_and_to_empty_slots(pooling):
    model = small_model(pooling)
    vectors = np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32)
    x = np.stack([pack_set(vectors, 6), pack_set(vectors[::-1].copy(), 6),
                  pack_set(vectors[[2, 0, 4, 1, 3]], 6)])
    bigger = small_model(pooling, cap=9)
    bigger.set_weights(model.get_weights())
    out = model(x, training=False)
    padded = bigger(np.stack([pack_set(vectors, 9)]), training=False)
    for t in ("gender", "location", "occupation"):
        p = np.asarray(out[t])
        np.testing.assert_allclose(p[1], p[0], atol=1e-6)
        np.testing.assert_allclose(p[2], p[0], atol=1e-6)
        np.testing.assert_allclose(np.asarray(padded[t])[0], p[0], atol=1e-6)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("pooling", ["attention", "evidence", "neighbours", *LATENTS])
def test_empty_set_and_one_image_give_probabilities(pooling):
    model = small_model(pooling)
    one = pack_set(np.ones((1, 8), np.float32), 6)
    empty = np.zeros((6, 9), np.float32)
    out = model(np.stack([one, empty]), training=False)
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())


def test_a_side_view_gives_its_traits_and_the_main_view_the_others():
    """ComboPosterior with side_traits: gender from the side view's Bayes rule, the rest from the main one's."""
    from profiler.models.set_head import ComboPosterior

    classes = (2, 3)
    main = np.log([[0.9, 0.1, 0.1, 0.1, 0.1, 0.1]])  # per combination (gender-major), one image
    side = np.log([[0.1, 0.1, 0.1, 0.2, 0.9, 0.1]])
    loglike = np.concatenate([main, side], axis=1)[None].astype(np.float32)  # (1 user, 1 image, 12)
    layer = ComboPosterior(classes, side_traits=[0])
    gender, other = (np.asarray(p)[0] for p in layer([loglike, np.ones((1, 1), np.float32)]))
    expect_main, expect_side = np.exp(main[0]) / np.exp(main[0]).sum(), np.exp(side[0]) / np.exp(side[0]).sum()
    np.testing.assert_allclose(gender, expect_side.reshape(classes).sum(axis=1), rtol=1e-6)  # female 0.3 of 1.5
    np.testing.assert_allclose(other, expect_main.reshape(classes).sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(gender, [0.2, 0.8], rtol=1e-6)
    assert layer.get_config()["side_traits"] == [0]
    with pytest.raises(ValueError, match="latent side traits must be distinct positions of 2 traits"):
        ComboPosterior(classes, side_traits=[0, 0])


def test_pack_set_marks_real_rows_and_chooses_rows():
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    packed = pack_set(vectors, 6)
    assert packed.shape == (6, 4) and packed[:, -1].tolist() == [1, 1, 1, 1, 0, 0]
    assert np.array_equal(packed[:4, :3], vectors) and not packed[4:].any()
    assert np.array_equal(pack_set(vectors, 2, np.array([1, 3]))[:, :3], vectors[[1, 3]])
    assert pack_set(vectors, 2)[:, -1].tolist() == [1, 1]


@pytest.mark.parametrize("pooling", ["attention", "evidence", "neighbours", *LATENTS])
def test_save_load_identical(tmp_path, pooling):
    import profiler
    from profiler.models import model_info, save_model

    model = small_model(pooling)
    x = np.stack([pack_set(np.random.default_rng(3).normal(size=(k, 8)).astype(np.float32), 6)
                  for k in (1, 4, 6)])
    save_model(model, tmp_path / "m.keras")
    loaded = profiler.load_model(tmp_path / "m.keras")  # the documented entry point
    for t, v in model(x, training=False).items():
        assert np.array_equal(np.asarray(v), np.asarray(loaded(x, training=False)[t]))
    info = model_info(loaded)
    assert (info["variant"], info["cap"], info["p"], info["encoder"], info["dim"]) == ("set", 6, None, "tiny@test", 8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A set model trained through the CLI on a tiny dataset, with users of 1 to 30 images."""
    root = tmp_path_factory.mktemp("set")
    counts = {f"u{i:02d}": [1, 3, 11, 30][i % 4] for i in range(16)}
    data = make_dataset(root / "data", counts)
    result = CliRunner().invoke(main, [
        "train", str(data), "--run-dir", str(root / "run"), "--epochs", "2", "--batch-size", "4", "-q",
        "--set", "encoder=tiny", "--set", "hidden=[4]", "--set", "dense=[4]", "--set", "cap=12",
        "--embeddings", str(root / "e.sqlite")])
    assert result.exit_code == 0, result.output
    return root, data, json.loads(result.stdout.strip().splitlines()[-1])


def test_train_and_predict_through_the_cli(trained):
    root, data, summary = trained
    assert summary["model"] == "set" and summary["epochs_run"] == 2
    assert (root / "run" / "model.keras").is_file() and (root / "run" / "curves.png").is_file()
    result = CliRunner().invoke(main, ["predict", str(data), "--model", str(root / "run" / "model.keras"),
                                       "--format", "jsonl", "--embeddings", str(root / "e.sqlite"), "-q"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 16
    used = {r["user_id"]: r["images_used"] for r in rows}
    assert used["u00"] == 1 and used["u01"] == 3 and used["u02"] == 11 and used["u03"] == 12
    assert not any(r["filled"] for r in rows)
    for r in rows:
        assert sum(r["occupation"]["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_prediction_does_not_depend_on_batch(trained):
    from profiler.prediction import predict_users

    root, data, _ = trained
    model = root / "run" / "model.keras"
    one = predict_users([data], model, batch_size=1, store=root / "e.sqlite")
    many = predict_users([data], model, batch_size=64, store=root / "e.sqlite")
    assert one.drop(columns="path").equals(many.drop(columns="path"))


def test_refuses_another_encoder(trained):
    from profiler.prediction import Predictor
    from tests.helpers import TinyEncoder

    class Other(TinyEncoder):
        identity = "tiny@other-weights"

    root, _, _ = trained
    with pytest.raises(ModelFileError, match="trained on embeddings from encoder tiny@test, but the encoder "
                                        "given is tiny@other-weights"):
        Predictor.load(root / "run" / "model.keras", encoder=Other())


def test_set_model_needs_the_dataset_not_a_cache(trained, tmp_path):
    root, data, _ = trained
    runner = CliRunner()
    assert runner.invoke(main, ["prepare", str(data), "--out-dir", str(tmp_path / "c"), "--size", "16", "-q"]).exit_code == 0
    result = runner.invoke(main, ["train", str(tmp_path / "c"), "--run-dir", str(tmp_path / "r"),
                                  "--set", "encoder=tiny"])
    assert result.exit_code == 1
    assert "a prepared image cache; the set model embeds the original images, so give it the dataset folder" in result.output


def test_unknown_encoder_is_a_clean_error(tmp_path):
    data = make_dataset(tmp_path / "d", {"a": 1, "b": 1, "c": 1, "d": 1})
    result = CliRunner().invoke(main, ["train", str(data), "--run-dir", str(tmp_path / "r"),
                                       "--set", "encoder=efficientnet_lit0"])
    assert result.exit_code == 1
    assert "encoder must be one of" in result.output and "'efficientnet_lit0'" in result.output


@pytest.mark.parametrize("pooling", ["mean", "neighbours", "latent", "latent-side"])
def test_set_training_resumes_exactly_and_is_deterministic(tmp_path, pooling):
    """The set model goes through the same training code: an interrupted run resumes to the same weights."""
    import pandas as pd

    from data_prep.dataset import load_dataset
    from profiler.config import resolve
    from profiler.embeddings import EmbeddedData, EmbeddingStore
    from profiler.models import load_model
    from profiler.training import train
    from tests.helpers import TinyEncoder

    data = make_dataset(tmp_path / "d", {f"u{i:02d}": (i % 5) + 1 for i in range(24)})
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        embedded = EmbeddedData.build(load_dataset(data), TinyEncoder(), store)
    side = ({} if pooling == "latent-side" else {"latent_side_pairs": "[]", "latent_side_traits": "[]"})
    config = resolve("default", overrides={"model": "set", "encoder": "tiny", "hidden": [4], "dense": [4],
                                           "cap": 4, "batch_size": 4, "epochs": 3,
                                           "set_pooling": pooling.split("-")[0], **side})
    train(embedded, tmp_path / "whole", config, progress=False)
    train(embedded, tmp_path / "again", config, progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(embedded, tmp_path / "cut", config, progress=False, callbacks=[interrupt_after(7)])
    train(embedded, tmp_path / "cut", config, progress=False, resume=True)
    whole = pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds")
    for other in ("again", "cut"):
        pd.testing.assert_frame_equal(whole, pd.read_csv(tmp_path / other / "history.csv").drop(columns="seconds"))
        for name in ("last.keras", "model.keras"):  # the final model: calibrated, its bank refilled
            a, b = load_model(tmp_path / "whole" / name), load_model(tmp_path / other / name)
            for wa, wb in zip(a.get_weights(), b.get_weights()):
                assert np.array_equal(wa, wb)
        assert not (tmp_path / other / "best.keras").exists()  # the checkpoint goes once the run is done


def tiny_latent(tmp_path, **settings):
    """24 users of 1 to 5 images embedded by the tiny encoder, and the default "latent" set
    model's configuration for them (with ``settings``)."""
    from data_prep.dataset import load_dataset
    from profiler.config import resolve
    from profiler.embeddings import EmbeddedData, EmbeddingStore
    from tests.helpers import TinyEncoder

    data = make_dataset(tmp_path / "d", {f"u{i:02d}": (i % 5) + 1 for i in range(24)})
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        embedded = EmbeddedData.build(load_dataset(data), TinyEncoder(), store)
    return embedded, resolve("default", overrides={"model": "set", "encoder": "tiny", "cap": 4, "batch_size": 4,
                                                   "epochs": 2, **settings})


def test_killed_while_refilling_the_bank_resumes_to_the_same_model(tmp_path, monkeypatch):
    """Killed after the epochs, in the bank's refill: no model.keras yet, the checkpoint kept;
    --resume writes the model file an uninterrupted run writes."""
    from profiler.families.sets import SetFamily
    from profiler.models import load_model, model_info
    from profiler.training import train

    embedded, config = tiny_latent(tmp_path)
    train(embedded, tmp_path / "whole", config, progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(SetFamily, "finish", killed)
    with pytest.raises(KeyboardInterrupt):
        train(embedded, tmp_path / "cut", config, progress=False)
    assert (tmp_path / "cut" / "best.keras").is_file() and not (tmp_path / "cut" / "model.keras").exists()
    monkeypatch.undo()
    train(embedded, tmp_path / "cut", config, progress=False, resume=True)
    a, b = load_model(tmp_path / "whole" / "model.keras"), load_model(tmp_path / "cut" / "model.keras")
    assert model_info(a) == model_info(b)
    assert all(np.array_equal(wa, wb) for wa, wb in zip(a.get_weights(), b.get_weights()))
    assert not (tmp_path / "cut" / "best.keras").exists()


def test_a_run_begun_by_an_earlier_version_resumes_to_the_same_model(tmp_path):
    """An earlier version kept its checkpoint as model.keras while the run lasted: a run it
    began, interrupted, resumes from there to the model an uninterrupted run writes."""
    from profiler.models import load_model
    from profiler.training import train

    embedded, config = tiny_latent(tmp_path, epochs="6")
    train(embedded, tmp_path / "whole", config, progress=False)
    with pytest.raises(KeyboardInterrupt):  # in epoch 5 (5 batches an epoch), after the best (epoch 4)
        train(embedded, tmp_path / "cut", config, progress=False, callbacks=[interrupt_after(23)])
    (tmp_path / "cut" / "best.keras").rename(tmp_path / "cut" / "model.keras")
    train(embedded, tmp_path / "cut", config, progress=False, resume=True)
    a, b = load_model(tmp_path / "whole" / "model.keras"), load_model(tmp_path / "cut" / "model.keras")
    assert all(np.array_equal(wa, wb) for wa, wb in zip(a.get_weights(), b.get_weights()))
    assert not (tmp_path / "cut" / "best.keras").exists()


def test_the_latent_bank_is_refilled_with_the_validation_users(tmp_path, monkeypatch, caplog):
    """After training, the "latent" model's bank holds every training-data user's images: the
    same EM on the kept axes, everything learnt kept; refilled with the training users alone,
    it is the trained model again."""
    from profiler.families.sets import SetFamily, refill_sources
    from profiler.models import load_model, model_info, set_head
    from profiler.training import split_indices, train

    embedded, config = tiny_latent(tmp_path, latent_refill="false")
    train(embedded, tmp_path / "plain", config, progress=False)
    refilling = dataclasses.replace(config, latent_refill=True, calibrate_refilled=False)
    train(embedded, tmp_path / "refilled", refilling, progress=False)
    plain, refilled = load_model(tmp_path / "plain" / "model.keras"), load_model(tmp_path / "refilled" / "model.keras")
    train_pos, val_pos = split_indices(embedded, config.val_share, config.seed)
    assert len(val_pos) == 4  # 0.15 of 24 users
    images = embedded.counts
    assert plain.get_layer("neighbours").size == images[train_pos].sum() == 59
    assert refilled.get_layer("neighbours").size == images.sum() == 70
    info_a, info_b = model_info(plain), model_info(refilled)
    assert info_a["temperatures"] == info_b["temperatures"] and info_a["decisions"] == info_b["decisions"]
    for name in ("posterior", "standardize"):
        for wa, wb in zip(plain.get_layer(name).get_weights(), refilled.get_layer(name).get_weights()):
            assert np.array_equal(wa, wb)
    for weight in ("kernel", "bias"):  # the learnt correction; its emission follows the new EM
        assert np.array_equal(getattr(plain.get_layer("reader"), weight), getattr(refilled.get_layer("reader"), weight))
    a, b = plain.get_layer("neighbours"), refilled.get_layer("neighbours")
    assert np.array_equal(np.asarray(a.projection), np.asarray(b.projection))
    assert np.array_equal(np.asarray(a.spread), np.asarray(b.spread))
    # the training users' rows of the refilled bank are the trained bank's, in the same order
    first = np.isin(np.repeat(np.arange(len(images)), images), train_pos)
    np.testing.assert_allclose(np.asarray(b.bank)[first], np.asarray(a.bank), atol=1e-6)
    start = (config.latent_start_trust, config.latent_start_temperature, config.latent_start_by_rank)
    again = refill_sources(plain, embedded, train_pos, rounds=config.latent_rounds, start=start)
    for wa, wb in zip(plain.get_weights(), again.get_weights()):
        np.testing.assert_allclose(wa, wb, atol=1e-6)
    everyone = refill_sources(plain, embedded, np.arange(len(images)), rounds=config.latent_rounds, start=start)
    for wa, wb in zip(refilled.get_weights(), everyone.get_weights()):
        assert np.array_equal(wa, wb)
    # calibrated through the refilled bank (the default): the same model, but for the
    # temperatures and the decision record, fitted on other probabilities
    train(embedded, tmp_path / "crossed", dataclasses.replace(refilling, calibrate_refilled=True), progress=False)
    crossed = load_model(tmp_path / "crossed" / "model.keras")
    for wa, wb in zip(refilled.get_weights(), crossed.get_weights()):
        assert np.array_equal(wa, wb)
    info_c = model_info(crossed)
    assert info_c["temperatures"] != info_b["temperatures"] and info_c["decisions"] != info_b["decisions"]
    assert {k: v for k, v in info_c.items() if k not in ("temperatures", "decisions", "ood")} == \
        {k: v for k, v in info_b.items() if k not in ("temperatures", "decisions", "ood")}
    # a bank that all the users' images would make too large keeps the training users'
    monkeypatch.setattr(set_head, "MAX_BANK_VALUES", 60 * (a.dims + a.width))
    monkeypatch.setattr(logging.getLogger("profiler"), "propagate", True)  # the CLI's set-up may have cut it
    with caplog.at_level("WARNING", logger="profiler"):
        assert SetFamily().finish(plain, embedded, np.arange(len(images)), refilling) is plain
    assert "the bank is not refilled with the validation users' images: 70 images are more than" in caplog.text


def test_bank_users_fill_at_most_bank_images():
    """All the users where their images fit; else a seeded choice whose images do, in order."""
    from core.errors import ConfigError
    from profiler.families.sets import bank_users, stratified_order

    class Counts:
        counts = np.array([3, 5, 2, 4, 6, 1, 3, 2])

        def labels(self, trait):
            return np.zeros(8, np.int64)

    data, positions = Counts(), np.array([0, 2, 3, 4, 7])  # 3 + 2 + 4 + 6 + 2 = 17 images
    assert bank_users(data, positions, 17, seed=0).tolist() == positions.tolist()
    chosen = bank_users(data, positions, 10, seed=0)
    assert set(chosen) <= set(positions) and data.counts[chosen].sum() <= 10 and np.all(np.diff(chosen) > 0)
    assert bank_users(data, positions, 10, seed=0).tolist() == chosen.tolist()  # seeded
    # one label combination: a prefix of the seeded permutation; the next user would not have fitted
    order = np.random.default_rng([0, 0xBA4C]).permutation(positions)
    assert stratified_order(data, positions, 0).tolist() == order.tolist()
    assert sorted(order[:len(chosen)]) == chosen.tolist()
    assert data.counts[order[:len(chosen) + 1]].sum() > 10
    with pytest.raises(ConfigError, match=r"bank_images is 1: fewer than the images of one user \(\d\); give at "
                                          r"least as many as a user has"):
        bank_users(data, positions, 1, seed=0)


def test_the_bank_keeps_each_label_combinations_share():
    """Every prefix of the bank's order holds each label combination's share of the users up
    to rounding (90 users: 60 of one combination, 20 and 10 of two others; a prefix ending at
    place f holds round(f * n) of a combination of n, within 1/2 + share * 3/2 of its share)."""
    from profiler.families.sets import bank_users, stratified_order

    gender = np.array([0] * 60 + [1] * 20 + [1] * 10)
    occupation = np.array([0] * 60 + [3] * 20 + [5] * 10)

    class Users:
        counts = np.full(90, 2)

        def labels(self, trait):
            return {"gender": gender, "location": np.zeros(90, np.int64), "occupation": occupation}[trait]

    data = Users()
    order = stratified_order(data, np.arange(90), seed=3)
    assert sorted(order.tolist()) == list(range(90))
    groups = (np.arange(90) < 60, (np.arange(90) >= 60) & (np.arange(90) < 80), np.arange(90) >= 80)
    for n in range(1, 91):
        for members, size in zip(groups, (60, 20, 10)):
            assert abs(members[order[:n]].sum() - size / 90 * n) <= 0.5 + size / 90 * 1.5
    chosen = bank_users(data, np.arange(90), 18, seed=3)  # 9 users of 2 images
    assert (chosen < 60).sum() == 6 and ((chosen >= 60) & (chosen < 80)).sum() == 2 and (chosen >= 80).sum() == 1
    assert stratified_order(data, np.arange(90), seed=4).tolist() != order.tolist()  # the seed decides


def test_a_bank_holds_at_most_bank_images(tmp_path, monkeypatch, caplog):
    """A training split with more images than bank_images fills the bank from a choice of its
    users; the refill takes a choice of every user as large, and adds nothing where the bank
    is full already; a bank larger than a model holds is a clear error."""
    from core.errors import ConfigError
    from profiler.families.sets import SETS, bank_users
    from profiler.models import load_model, set_head
    from profiler.training import split_indices, train

    embedded, config = tiny_latent(tmp_path, bank_images="40")  # the training split has 59 images
    train(embedded, tmp_path / "run", config, progress=False)
    train_pos, val_pos = split_indices(embedded, config.val_share, config.seed)
    kept = bank_users(embedded, train_pos, 40, config.seed)
    everyone = bank_users(embedded, np.union1d(train_pos, val_pos), 40, config.seed)
    model = load_model(tmp_path / "run" / "model.keras")
    size = model.get_layer("neighbours").size
    assert size == max(embedded.counts[kept].sum(), embedded.counts[everyone].sum()) and size <= 40
    built = SETS.build(config, embedded, train_pos)
    assert built.get_layer("neighbours").size == embedded.counts[kept].sum()
    # full already: no refill
    monkeypatch.setattr(logging.getLogger("profiler"), "propagate", True)  # the CLI's set-up may have cut it
    full = dataclasses.replace(config, bank_images=int(embedded.counts[kept].sum()))
    with caplog.at_level("INFO", logger="profiler"):
        assert SETS.finish(built, embedded, np.arange(len(embedded)), full) is built
    held = built.get_layer("neighbours").size
    assert (f"the bank is not refilled: it holds {held} images already, as many as the "
            f"{embedded.counts[bank_users(embedded, np.arange(len(embedded)), held, config.seed)].sum()} a refill "
            f"would give it (bank_images {held})") in caplog.text
    layer = built.get_layer("neighbours")
    monkeypatch.setattr(set_head, "MAX_BANK_VALUES", 59 * (layer.dims + layer.width) - 1)
    with pytest.raises(ConfigError, match="a bank of 59 images on 8 axes is more than a model holds; lower "
                                          "bank_images \\(now 100,000\\) or neighbour_dims"):
        SETS.build(dataclasses.replace(config, bank_images=100_000), embedded, train_pos)


def test_evidence_head_adds_each_images_scores():
    """softmax(bias + sum over real images of (standardised image) @ kernel): checked by hand."""
    model = small_model("evidence")
    vectors = np.random.default_rng(4).normal(size=(3, 8)).astype(np.float32)
    out = model(pack_set(vectors, 6)[None], training=False)
    h = vectors
    for name in ("standardize", "image1"):
        h = np.asarray(model.get_layer(name)(h)).reshape(len(vectors), -1)
    for t in ("gender", "location", "occupation"):
        head = model.get_layer(t)
        logits = h.sum(axis=0) @ np.asarray(head.kernel) + np.asarray(head.bias)
        expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        np.testing.assert_allclose(np.asarray(out[t])[0], expected, rtol=1e-5, atol=1e-6)


def test_neighbour_evidence_by_hand():
    """Bank: three unit vectors with known labels. Votes, smoothing and the relu'd log ratio by hand."""
    from profiler.models.set_head import NeighbourEvidence

    layer = NeighbourEvidence(size=3, dim=2, dims=2, classes=(2,), k=2, temperature=1.0)
    layer.build((None, None, 2))
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    prior = np.array([0.5, 0.5])
    layer.set_bank(np.eye(2), bank, labels, prior)
    x = np.array([[[2.0, 0.0]]], np.float32)  # the direction of bank image 0

    def expected(similarities, votes_for):
        w = np.exp(np.array(similarities) - max(similarities))
        h = (np.array([w[np.array(votes_for) == c].sum() for c in (0, 1)]) + prior) / (w.sum() + 1)
        return np.maximum(np.log(h / prior), 0)

    # inference: neighbours 0 (similarity 1, class 0) and 1 (similarity 0, class 1)
    np.testing.assert_allclose(np.asarray(layer(x))[0, 0], expected([1.0, 0.0], [0, 1]), rtol=1e-5)
    # training: its own entry (similarity 1) is left out; neighbours 1 (0, class 1) and 2 (-1, class 1)
    np.testing.assert_allclose(np.asarray(layer(x, training=True))[0, 0], expected([0.0, -1.0], [1, 1]),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("pooling", ["neighbours", "latent", "latent-side"])
def test_a_fixed_first_stage_is_computed_once_and_gives_the_full_models_answer(tmp_path, pooling):
    """A bank pooling: training fits the heads on evidence computed once; the saved model reads raw sets."""
    from data_prep.dataset import load_dataset
    from profiler.config import resolve
    from profiler.embeddings import EmbeddedData, EmbeddingStore
    from profiler.models import load_model
    from profiler.training import train
    from tests.helpers import TinyEncoder

    data = make_dataset(tmp_path / "d", {f"u{i:02d}": (i % 5) + 1 for i in range(24)})
    with EmbeddingStore(tmp_path / "e.sqlite") as store:
        embedded = EmbeddedData.build(load_dataset(data), TinyEncoder(), store)
    pairs = ({"latent_side_pairs": '["gender*occupation"]', "latent_side_traits": '["gender"]'}
             if pooling == "latent-side" else
             {"latent_pairs": '["gender*occupation"]', "latent_side_pairs": "[]", "latent_side_traits": "[]"})
    config = resolve("default", overrides={"model": "set", "encoder": "tiny", "cap": 4, "batch_size": 4,
                                           "epochs": 2, "set_pooling": pooling.split("-")[0], "neighbours": 5,
                                           "latent_neighbours": 5, **pairs})
    train(embedded, tmp_path / "run", config, progress=False)
    model = load_model(tmp_path / "run" / "last.keras")
    stage, head = model.fixed_stage()
    mapped = embedded.mapped(stage, np.array([], np.int64))  # every user as at prediction time
    if pooling == "neighbours":
        assert mapped.vectors.shape == (len(embedded.vectors), 16)
        assert (mapped.vectors >= 0).all()  # evidence: nothing below "says nothing"
    else:  # the sources' log-probabilities (noise, 16 classes, 16 gender-occupation pairs: 33,
        # padded to 48; with a side view, the main view's 17 padded to 32 first) and the image on
        # the bank's 8 axes, finite
        views = [(0, 33, 48)] if pooling == "latent" else [(0, 17, 32), (32, 33, 48)]
        width = sum(w for _, _, w in views)
        assert mapped.vectors.shape == (len(embedded.vectors), width + 8) and np.isfinite(mapped.vectors).all()
        for start, sources, w in views:
            q = np.exp(mapped.vectors[:, start:start + w])
            np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
            assert (q[:, sources:] < 1e-20).all()  # the padding columns: no source
        # unit spread on the main axes (the tiny encoder's embeddings of plain colours have rank 3 or 4)
        np.testing.assert_allclose(mapped.vectors[:, width:width + 3].std(axis=0), 1.0, rtol=0.3)
    raw = np.stack([pack_set(embedded.user_images(i), 4) for i in range(len(embedded))])
    evidence = np.stack([pack_set(mapped.user_images(i), 4) for i in range(len(mapped))])
    full, fitted = model(raw, training=False), head(evidence, training=False)
    for t in ("gender", "location", "occupation"):
        np.testing.assert_allclose(np.asarray(full[t]), np.asarray(fitted[t]), rtol=1e-5, atol=1e-6)


def test_a_user_id_the_submission_format_cannot_carry_is_refused(trained, tmp_path):
    """A folder named with the separator: no malformed line, the old output kept byte for byte."""
    root, _, _ = trained
    data = make_dataset(tmp_path / "d", {"fine": 2, "a:::b": 2}, truth=None)
    out = tmp_path / "old.txt"
    out.write_bytes(b"previous results\n")
    result = CliRunner().invoke(main, ["predict", str(data), "--model",
                                       str(root / "run" / "model.keras"), "--format", "submission",
                                       "-o", str(out), "--embeddings", str(root / "e.sqlite"), "-q"])
    assert result.exit_code == 1, result.output
    assert f"{out}: 'a:::b' cannot be written in the txt format" in result.output
    assert "Traceback" not in result.output and out.read_bytes() == b"previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "old.txt"]  # no temporary file left


@pytest.mark.parametrize("pooling", ["neighbours", *LATENTS])
def test_a_model_file_claiming_a_huge_bank_is_refused(tmp_path, pooling):
    """A crafted config (a bank of 10^9 images) fails to load with a message, allocating nothing."""
    import json as json_
    import zipfile

    from profiler.models import load_model, save_model

    save_model(small_model(pooling), tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json_.loads(files["config.json"])
    config["config"]["neighbours"]["size"] = 10 ** 9
    files["config.json"] = json_.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "evil.keras", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(ModelFileError, match="evil.keras: not a loadable profiler model .*out of range"):
        load_model(tmp_path / "evil.keras")


@pytest.mark.parametrize("pairs", [[[0, 0]], [[0, 2], [2, 0]], [[0, 5]], [7], "ab"])
def test_a_model_file_with_bad_source_pairs_is_refused(tmp_path, pairs):
    """Pairs of traits that do not exist, repeat, or are not pairs: a message, no traceback."""
    import json as json_
    import zipfile

    from profiler.models import load_model, save_model

    save_model(small_model("latent"), tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = json_.loads(files["config.json"])
    assert config["config"]["neighbours"]["pairs"] == [[0, 2]]
    config["config"]["neighbours"]["pairs"] = pairs
    files["config.json"] = json_.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "evil.keras", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(ModelFileError, match="evil.keras: not a loadable profiler model .*latent source pairs "
                                             "must be distinct pairs of two of 3 traits"):
        load_model(tmp_path / "evil.keras")


def test_latent_evidence_and_posterior_by_hand():
    """One trait of two classes, sources (noise, class 0, class 1). The layer's log-likelihoods and the
    posterior's Bayes rule over a set, computed by hand."""
    from profiler.models.set_head import ComboPosterior, LatentEvidence

    layer = LatentEvidence(size=3, dim=2, dims=2, classes=(2,), k=2, temperature=1.0, alpha=1.0)
    layer.build((None, None, 2))
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    r = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # class 0's item, noise, class 1's item
    pi = np.array([0.6, 0.2, 0.2])
    emission = np.array([[0.8, 0.2, 0.0], [0.8, 0.0, 0.2]]) / pi  # theta (0.8, 0.2), allowed per class
    layer.set_bank(np.eye(2), bank, r, pi, emission)
    x = np.array([[[2.0, 0.0], [0.0, 3.0]]], np.float32)
    out = np.asarray(layer(x))[0]
    w = np.exp(np.array([1.0, 0.0]) - 1.0)  # image 1: bank 0 (similarity 1), bank 1 (0)
    q1 = (w[0] * r[0] + w[1] * r[1] + pi) / (w.sum() + 1)
    w2 = np.exp(np.array([1.0, 0.0]) - 1.0)  # image 2: bank 1 (1), then bank 0 or 2 (0, tied)
    expected1 = np.log(q1 @ emission.T)
    np.testing.assert_allclose(out[0], expected1, rtol=1e-5)
    assert out[0, 0] > out[0, 1]  # class 0's item says class 0
    assert out.shape == (2, 2) and np.isfinite(out).all() and w2.sum() > 0

    posterior = ComboPosterior((2,))
    posterior.build([(None, 2, 2), (None, 2)])
    posterior.bias.assign(np.log([0.3, 0.7]))
    loglike = np.array([[[0.5, -0.5], [9.0, 9.0]]], np.float32)
    mask = np.array([[1.0, 0.0]], np.float32)  # the second slot is empty: adds nothing
    (p,) = posterior([loglike, mask])
    logits = np.log([0.3, 0.7]) + np.array([0.5, -0.5])
    np.testing.assert_allclose(np.asarray(p)[0], np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)


def test_source_reader_by_hand():
    """One trait of two classes, sources (noise, class 0, class 1) padded to 4 columns. With a zero
    kernel the reader gives the bank's reading exactly; with one it corrects the sources' log-odds
    by x W + b, and a padded column stays impossible whatever the kernel says."""
    from profiler.models.set_head import LatentEvidence, SourceReader

    bank_layer = LatentEvidence(size=3, dim=2, dims=2, classes=(2,), k=2, temperature=1.0, reader=True)
    plain = LatentEvidence(size=3, dim=2, dims=2, classes=(2,), k=2, temperature=1.0)
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    r = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    pi = np.array([0.6, 0.2, 0.2])
    emission = np.array([[0.8, 0.2, 0.0], [0.8, 0.0, 0.2]]) / pi
    for layer in (bank_layer, plain):
        layer.build((None, None, 2))
    bank_layer.set_bank(np.eye(2), bank, r, pi, spread=np.array([2.0, 0.5]))
    plain.set_bank(np.eye(2), bank, r, pi, emission)
    assert bank_layer.width == 16 and bank_layer.out_width == 18
    x = np.array([[[2.0, 0.0], [0.0, 3.0]]], np.float32)
    read = np.asarray(bank_layer(x))[0]
    np.testing.assert_allclose(read[:, 16:], [[1.0, 0.0], [0.0, 6.0]], rtol=1e-6)  # x / spread

    reader = SourceReader(sources=3, width=16, dims=2, combos=2)
    reader.build((None, None, 18))
    reader.emission.assign(bank_layer.padded(emission))
    np.testing.assert_allclose(np.asarray(reader(read[None]))[0], np.asarray(plain(x))[0], rtol=1e-5)

    kernel = np.zeros((2, 16), np.float32)
    kernel[0, 1], kernel[1, 2], kernel[1, 5] = 0.5, -0.25, 100.0  # column 5 is padding
    reader.kernel.assign(kernel)
    reader.bias.assign(np.eye(16, dtype=np.float32)[0] * 0.1)
    logits = read[:, :3] + read[:, 16:] @ kernel[:, :3] + np.array([0.1, 0.0, 0.0])
    q = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(reader(read[None]))[0], np.log(q @ emission.T), rtol=1e-5)
