"""The instance-probe reference: an image's group from its embedding, combined per user by Bayes' rule."""
import numpy as np
import pytest

from core.errors import DataError
from core.labels import TRAITS
from data_prep.sample.process import COMBOS


@pytest.fixture(scope="module")
def process():
    from data_prep.sample.catalog import build_pools, load_items
    from data_prep.sample.process import Process

    return Process([i.name for i in load_items()], build_pools())


def test_groups_are_items_with_equal_emission(process):
    from data_prep.sample.catalog import build_pools
    from data_prep.sample.probe import item_groups

    group, mass = item_groups(process)
    index = {name: i for i, name in enumerate(process.items)}
    pools = build_pools()
    noise = {int(group[index[n]]) for n in pools.noise}
    assert len(noise) == 1  # every noise item says the same: nothing
    center = [n for n in pools.location["center"] if n not in pools.occupation_objects["social"]]
    assert len({int(group[index[n]]) for n in center}) == 1
    # classical_building is a center landmark and a social object: a group of its own
    assert group[index["classical_building"]] != group[index[center[0]]]
    np.testing.assert_allclose(mass.sum(axis=1), 1.0)  # each combination emits some group
    # a center landmark: only center users show one, a signal 0.3 x location 0.4 share of their images
    shown = mass[:, group[index[center[0]]]]
    is_center = np.array([loc == "center" for _, loc, _ in COMBOS])
    assert (shown[~is_center] == 0).all()
    np.testing.assert_allclose(shown[is_center], 0.3 * 0.4 * len(center) / len(pools.location["center"]))


def test_perfect_features_give_the_bayes_rule(process):
    """Embeddings that are the group itself (one-hot, plus jitter): the probe is the Bayes rule."""
    from data_prep.sample.probe import InstanceProbe

    rng = np.random.default_rng(0)
    users = [process.sample_user(rng) for _ in range(400)]
    probe = InstanceProbe(process, c=100.0)
    n_groups = probe.mass.shape[1]

    def embed(items):
        g = probe.groups([process.items[i] for i in items])
        return np.eye(n_groups)[g] * 5 + rng.normal(0, 0.01, (len(g), n_groups))

    train, test = users[:300], users[300:]
    train_items = [i for u in train for i in u["items"]]
    # every group the test users show must be learnable: keep the test users the training covers
    seen = set(probe.groups([process.items[i] for i in train_items]).tolist())
    test = [u for u in test if set(probe.groups([process.items[i] for i in u["items"]]).tolist()) <= seen]
    assert len(test) > 50
    probe.fit(embed(train_items), [process.items[i] for i in train_items])
    items = [i for u in test for i in u["items"]]
    owner = np.repeat(np.arange(len(test)), [len(u["items"]) for u in test])
    predicted = probe.predict(embed(items), owner, len(test))
    expected = process.bayes_predictions([{**u, "broken": [False] * len(u["items"])} for u in test])
    for t in TRAITS:
        assert predicted[t] == expected[t]


def test_probe_submission_needs_sample_data(tmp_path):
    from data_prep.sample.probe import probe_submission

    with pytest.raises(DataError, match="needs sample data from 'profiler sample-data'"):
        probe_submission(tmp_path, None, None, tmp_path / "x.txt")
