"""Explanations: each image's effect is the fall of the class's probability without it, the same
whatever the batch, in predict's JSON and in ``profiler explain``'s contact sheet."""
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import main
from tests.helpers import make_dataset, train_tiny_set


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    data = make_dataset(root / "data", {f"u{i:02d}": [2, 3, 5][i % 3] for i in range(24)})
    return root, data, train_tiny_set(data, root / "run", root / "e.sqlite")


def predict_json(root, paths, model, *extra):
    result = run("predict", *paths, "--model", model, "-q", "--embeddings", root / "e.sqlite", "--format", "json",
                 *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_an_effect_is_the_fall_without_the_image(trained, tmp_path):
    root, data, model = trained
    user = data / "images" / "u02"  # five images
    rows = predict_json(root, [user], model, "--explain", 5)
    evidence = rows[0]["evidence"]
    assert set(evidence) == {"gender", "location", "occupation"}
    for trait, e in evidence.items():
        assert e["class"] == rows[0][trait]["label"]
        assert e["probability"] == pytest.approx(rows[0][trait]["probabilities"][e["class"]])
        effects = [item["effect"] for item in e["images"]]
        assert effects == sorted(effects, reverse=True) and len(effects) == 5
    # the same user without its most supportive location image, predicted from files
    top = evidence["location"]["images"][0]
    fewer = tmp_path / "u02"
    shutil.copytree(user, fewer)
    (fewer / top["file"]).unlink()
    without = predict_json(root, [fewer], model)[0]["location"]["probabilities"][evidence["location"]["class"]]
    assert without == pytest.approx(evidence["location"]["probability"] - top["effect"], abs=1e-6)


def test_evidence_is_deterministic_and_the_same_whatever_the_batch(trained):
    root, data, model = trained
    a = predict_json(root, [data], model, "--explain", 2, "--batch-size", 1)
    b = predict_json(root, [data], model, "--explain", 2, "--batch-size", 7)
    assert [r["evidence"] for r in a] == [r["evidence"] for r in b]
    assert all(len(r["evidence"]["gender"]["images"]) == min(2, r["images_used"]) for r in a)
    assert "evidence" not in predict_json(root, [data / "images" / "u00"], model)[0]


def test_explain_draws_a_contact_sheet(trained, tmp_path):
    root, data, model = trained
    sheet = tmp_path / "sheet.png"
    result = run("explain", data / "images" / "u02", "--model", model, "--embeddings", root / "e.sqlite",
                 "-o", sheet)
    assert result.exit_code == 0, result.output
    assert sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gender: ") and "(explained: " in lines[0]
    assert len([line for line in lines if line.startswith("  ")]) == 15  # five images, three traits
    starts = {"sheet.pdf": b"%PDF", "sheet.svg": b"<?xml", "sheet.JPG": b"\xff\xd8\xff", "sheet.xyz": b"\x89PNG"}
    for name, start in starts.items():  # the format the name asks for; PNG for any other name
        result = run("explain", data / "images" / "u02", "--model", model, "--embeddings", root / "e.sqlite",
                     "-o", tmp_path / name)
        assert result.exit_code == 0 and (tmp_path / name).read_bytes().startswith(start), name


def test_explain_refuses_what_it_cannot_explain(trained, tmp_path):
    root, data, model = trained
    result = run("explain", data, "--model", model, "--embeddings", root / "e.sqlite")
    assert result.exit_code == 2 and "a dataset folder (24 users); give one user's folder" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.png").write_bytes(b"not an image")
    before = b"old sheet"
    (tmp_path / "sheet.png").write_bytes(before)
    result = run("explain", empty, "--model", model, "--embeddings", root / "e.sqlite", "-o", tmp_path / "sheet.png")
    assert result.exit_code == 1 and f"{empty}: no usable image; nothing to explain" in result.output
    assert "Traceback" not in result.output and (tmp_path / "sheet.png").read_bytes() == before
    result = run("predict", data, "--model", model, "--explain", 3, "--format", "csv")
    assert result.exit_code == 2 and "--explain writes its evidence in the json and jsonl formats" in result.output


def test_a_3d_cnn_image_is_blacked_out_in_every_slot_it_fills():
    from profiler.families.volumes import VolumeReader

    reader = VolumeReader({"p": 11, "height": 4, "width": 4, "fit": "pad"})
    images = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30)])
    user = SimpleNamespace(images=images, used=["a.png", "b.png", "c.png"])
    stack, names = reader.ablations(user)
    assert names == ["a.png", "b.png", "c.png"] and stack.shape == (4, 11, 4, 4, 3)
    slots = stack[:, :, 0, 0, 0]
    assert slots[0].tolist() == [10, 20, 30] * 3 + [10, 20]  # filled cyclically
    assert slots[2].tolist() == [10, 0, 30] * 3 + [10, 0]  # b taken out of every slot
    both, _ = reader.ablations(user, [(0, 2)])
    assert both[0, :, 0, 0, 0].tolist() == [0, 20, 0] * 3 + [0, 20]
