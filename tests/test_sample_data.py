import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from data_prep.cache import PrepareConfig, prepare
from data_prep.dataset import load_dataset
from core.errors import DataError, ImageError
from data_prep.images import load_image
from core.labels import LABELS, TRAITS
from data_prep.sample.catalog import Pools, build_pools, load_items
from data_prep.sample.generate import SampleConfig, generate
from data_prep.sample.process import PRIORS, Process, ProcessConfig


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample") / "data"
    config = SampleConfig(users=24, seed=7, process=ProcessConfig(broken_share=0.1))
    meta = generate(out, config, workers=1, progress=False, ceiling_users=2000)
    return out, meta, config


def test_layout_reads_back_through_the_data_stage(small, tmp_path):
    out, meta, _ = small
    assert meta["users"] == {"train": 17, "test": 7}
    train = load_dataset(out / "train")
    assert len(train.users) == 17 and train.has_truth
    cache = prepare(out / "train", tmp_path / "cache", config=PrepareConfig(height=16, width=16),
                    workers=1, progress=False)
    assert cache.meta["n_skipped_files"] == sum(meta["files"]["broken"].values()) - _broken_in(out, "test")


def _broken_in(out, split):
    import pandas as pd

    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    return int((manifest[manifest["split"] == split]["broken"] != "").sum())


def test_broken_files_are_broken_and_the_rest_decode(small):
    import pandas as pd

    out, _, _ = small
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False)
    assert set(manifest["broken"]) <= {"", "truncated", "empty", "not_an_image"}
    assert (manifest["broken"] != "").any()
    for row in manifest.itertuples():
        path = out / row.split / "images" / row.user_id / row.file
        if row.broken:
            with pytest.raises(ImageError):
                load_image(path, (16, 16))
        else:
            assert load_image(path, (16, 16)).shape == (16, 16, 3)


def test_same_seed_is_byte_identical_whatever_the_workers(small, tmp_path):
    out, _, config = small
    again = tmp_path / "again"
    generate(again, config, workers=2, progress=False, ceiling_users=2000)
    first = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    second = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert first == second
    assert all((out / p).read_bytes() == (again / p).read_bytes() for p in first)


def test_existing_output_is_not_overwritten(small):
    out, _, config = small
    with pytest.raises(DataError, match="already exists and is not empty"):
        generate(out, config, workers=1, progress=False)


@pytest.mark.parametrize("via", ["generate", "sample-data", "demo"])
def test_a_folder_that_is_not_sample_data_is_never_replaced(tmp_path, via):
    """Someone's own dataset at OUT (or demo's --data): refused, even with --force, every byte kept."""
    mine = tmp_path / "mine"
    (mine / "images" / "u1").mkdir(parents=True)
    (mine / "images" / "u1" / "a.jpg").write_bytes(b"my photo")
    (mine / "truth.txt").write_text("u1:::female:::center:::arts\n")
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    expected = f"{mine}: exists and is not a sample dataset made by profiler (no generator.json of ours)"
    if via == "generate":
        with pytest.raises(DataError, match=r"is not a sample dataset made by profiler .* even with --force"):
            generate(mine, SampleConfig(users=24, seed=7), workers=1, force=True, progress=False)
    else:
        args = (["sample-data", str(mine), "--users", "24", "--force", "-q"] if via == "sample-data" else
                ["demo", "--data", str(mine), "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"),
                 "--users", "24", "-q"])
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and expected in result.output, result.output
        assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before


def test_an_earlier_sample_dataset_is_replaced_with_force(small, tmp_path):
    _, _, config = small
    out = tmp_path / "s"
    generate(out, config, workers=1, progress=False, ceiling_users=2000)
    (out / "stale.txt").write_text("from before")
    generate(out, config, workers=1, force=True, progress=False, ceiling_users=2000)
    assert not (out / "stale.txt").exists() and (out / "generator.json").is_file()


def test_process_matches_its_parameters():
    config = ProcessConfig()
    process = Process([i.name for i in load_items()], build_pools(), config)
    rng = np.random.default_rng(0)
    users = [process.sample_user(rng) for _ in range(20000)]
    for trait in TRAITS:
        counts = {c: 0 for c in LABELS[trait]}
        for u in users:
            counts[u["labels"][trait]] += 1
        for c, prior in PRIORS[trait].items():
            assert counts[c] / len(users) == pytest.approx(prior, abs=0.012)
    n = np.array([len(u["items"]) for u in users])
    assert np.mean(n < 11) == pytest.approx(config.fewer_share, abs=0.01)
    assert np.mean(n > 11) == pytest.approx(config.more_share, abs=0.01)
    broken = np.concatenate([u["broken"] for u in users])
    assert broken.mean() == pytest.approx(config.broken_share, abs=0.003)
    noise = set(build_pools().noise)
    items = [process.items[i] for u in users for i in u["items"]]
    assert np.mean([i not in noise for i in items]) == pytest.approx(config.signal, abs=0.01)


def tiny_process(signal=0.5):
    """Gender only: 'a' female, 'b' male, 'c' both (ambiguous), 'n' noise; one image a user."""
    every = lambda classes, item: {c: [item] for c in classes}  # noqa: E731
    pools = Pools(gender={"female": ["a", "c"], "male": ["b", "c"]},
                  occupation_people={(g, o): ["x"] for g in LABELS["gender"] for o in LABELS["occupation"]},
                  occupation_objects=every(LABELS["occupation"], "x"),
                  location=every(LABELS["location"], "x"), noise=["n"])
    config = ProcessConfig(signal=signal, trait_weights=(1.0, 0.0, 0.0), p=1, fewer_share=0,
                           more_share=0, broken_share=0)
    return Process(["a", "b", "c", "n", "x"], pools, config)


def test_ceiling_by_hand():
    process = tiny_process(0.5)
    # P(a|female) = P(c|female) = 0.25, P(n) = 0.5; priors female 0.48, male 0.52
    post = process.marginals(process.posterior([[0], [2], [3]]))["gender"]
    assert post[0].tolist() == pytest.approx([1.0, 0.0])      # 'a': surely female
    assert post[1].tolist() == pytest.approx([0.48, 0.52])    # 'c': no information
    assert post[2].tolist() == pytest.approx([0.48, 0.52])    # noise: no information
    # Bayes rule: right on a/b (half the signal), else says "male" (right 52 % of the time):
    # accuracy = 0.25 + 0.75 * 0.52 = 0.64
    mc = process.monte_carlo_ceiling(users=20000, seed=1)
    assert mc["gender"]["accuracy"] == pytest.approx(0.64, abs=0.012)
    assert mc["gender"]["expected_accuracy"] == pytest.approx(0.64, abs=0.012)


def test_no_signal_means_the_ceiling_is_the_majority():
    mc = tiny_process(0.0).monte_carlo_ceiling(users=5000)
    assert mc["gender"]["accuracy"] == pytest.approx(0.52, abs=0.02)
    assert mc["gender"]["expected_accuracy"] == pytest.approx(0.52)


def test_generator_json_records_the_ceiling(small):
    out, meta, _ = small
    stored = json.loads((out / "generator.json").read_text())
    assert stored == meta
    for scope in ("population", "train", "test"):
        for trait in TRAITS:
            ceiling = stored["ceiling"][scope][trait]
            assert stored["majority_accuracy"][trait] < ceiling["expected_accuracy"] <= 1


def test_cli(tmp_path):
    result = CliRunner().invoke(main, ["sample-data", str(tmp_path / "s"), "--users", "6", "-j", "1", "-q",
                                       "--contact-sheet", str(tmp_path / "sheet.png")])
    assert result.exit_code == 0, result.output
    assert "wrote 4 train and 2 test users" in result.output and "Bayes ceiling" in result.output
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    again = CliRunner().invoke(main, ["sample-data", str(tmp_path / "s"), "--users", "6"])
    assert again.exit_code == 1 and "already exists" in again.output


def test_item_oracle_learns_from_the_answer_key(tmp_path):
    """Items that give away gender: the oracle gets every test user's gender right."""
    import pandas as pd

    from data_prep.sample.oracle import oracle_submission
    from data_prep.truth import read_truth
    from tests.helpers import make_dataset

    rows = []
    for split, n in (("train", 12), ("test", 6)):
        users = {f"{split}{i}": 2 for i in range(n)}
        make_dataset(tmp_path / split, users)
        for i, uid in enumerate(users):  # make_dataset alternates female, male
            for j in range(2):
                item = ("girl" if i % 2 == 0 else "boy") if j == 0 else f"noise{(i * 7 + j) % 5}"
                rows.append({"split": split, "user_id": uid, "file": f"img{j:02d}.png", "item": item,
                             "broken": ""})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    out = oracle_submission(tmp_path, tmp_path / "oracle.txt")
    predicted = read_truth(out)
    truth = {u.user_id: u.labels["gender"] for u in load_dataset(tmp_path / "test").users}
    assert len(predicted) == 6
    assert predicted["gender"].to_dict() == truth
    with pytest.raises(DataError, match="no manifest.csv"):
        oracle_submission(tmp_path / "train", tmp_path / "x.txt")
