"""Every model family through the shared harness, and the layers the package promises."""
import ast
from pathlib import Path

import numpy as np
import pytest

from core.labels import LABELS, TRAITS
from profiler.config import resolve
from profiler.embeddings import EmbeddedData
from profiler.families import FAMILIES, SETS, VOLUMES, family_of
from tests.harness import run_model_test
from tests.helpers import tiny_cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory.mktemp("families"), 12)


def embedded(users: int = 12, dim: int = 8, seed: int = 0) -> EmbeddedData:
    """Synthetic embeddings: users of 1 to 9 images, labels cycling through every class."""
    rng = np.random.default_rng(seed)
    counts = np.array([1 + (i * 4) % 9 for i in range(users)])
    labels = {t: np.arange(users) % len(LABELS[t]) for t in TRAITS}
    return EmbeddedData(Path("synthetic"), "tiny@test", dim, [f"u{i:02d}" for i in range(users)],
                        rng.normal(size=(counts.sum(), dim)).astype(np.float32), counts, labels)


@pytest.mark.parametrize("model", ["model1", "model2"])
def test_volume_family(model, cache, tmp_path):
    filters = [4] * (4 if model == "model1" else 7)
    config = resolve("default", overrides={"model": model, "size": 16, "filters": filters, "dense": [8],
                                           "batch_size": 4})
    run_model_test(VOLUMES, config, cache, tmp_path)


@pytest.mark.parametrize("pooling", ["meanmax", "attention", "evidence", "neighbours", "latent"])
def test_set_family(pooling, tmp_path):
    config = resolve("default", overrides={"model": "set", "encoder": "tiny", "cap": 6, "hidden": [4],
                                           "dense": [4], "set_pooling": pooling, "neighbours": 5,
                                           "latent_neighbours": 5,
                                           "neighbour_dims": 4, "batch_size": 4})
    run_model_test(SETS, config, embedded(), tmp_path)


def test_every_model_has_one_family():
    from profiler.config import MODELS

    assert sorted(m for f in FAMILIES for m in f.models) == sorted(MODELS)
    assert family_of("set") is SETS and family_of("model2") is VOLUMES


def test_a_family_refuses_another_familys_data(cache, tmp_path):
    from core.errors import DataError
    from profiler.training import train

    config = resolve("default", overrides={"model": "set", "encoder": "tiny"})
    with pytest.raises(DataError, match=r"the set model \(sets\) cannot train on Cache"):
        train(cache, tmp_path / "r", config, progress=False)


def imports(path: Path) -> set[str]:
    """The top-level packages a module imports (anywhere in it, lazily or not)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package,forbidden", [
    ("core", {"data_prep", "profiler", "cli", "keras", "tensorflow"}),
    ("data_prep", {"profiler", "cli", "keras", "tensorflow"}),
    ("profiler", {"cli"}),
])
def test_the_layers_hold(package, forbidden):
    offenders = {str(p.relative_to(ROOT)): sorted(imports(p) & forbidden)
                 for p in (ROOT / package).rglob("*.py") if imports(p) & forbidden}
    assert offenders == {}


def code_words(path: Path) -> tuple[set[str], set[str]]:
    """The names (with attributes and imported names) and the string constants of a
    module's code; docstrings are left out (they may name the families to explain)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    names, strings = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name.split(".")[-1])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            strings.add(node.value)
    return names, strings


@pytest.mark.parametrize("module", ["profiler/training.py", "profiler/prediction.py", "profiler/evaluation.py",
                                    "profiler/runs.py", "profiler/callbacks.py"])
def test_no_family_branch_outside_the_families(module):
    """The trainer, the predictor and evaluation name no model and no family's data type."""
    names, strings = code_words(ROOT / module)
    assert names & {"EmbeddedData", "Cache", "is_set", "is_embedded", "SetProfiler", "Cnn3dProfiler",
                    "pack_set", "build_volume", "SETS", "VOLUMES"} == set()
    assert strings & {"set", "model1", "model2", "sets", "volumes"} == set()
