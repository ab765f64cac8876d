"""profiler.models.latent: the sources' layout, the neighbour reading and EM on hand-made cases."""
import numpy as np
import pytest

from profiler.models.latent import (check_pairs, fit_sources, label_reading, layout, nearest, rank_agreement,
                                    read_sources, start_theta, within_whitening)


def test_layout_lists_noise_then_each_traits_classes():
    plan = layout((2, 3))
    assert plan.sources == 6 and plan.kinds == 3 and plan.kind.tolist() == [0, 1, 1, 2, 2, 2]
    # combination (1, 2) (row-major: 1 * 3 + 2 = 5) may post noise, class 1 of trait 0, class 2 of trait 1
    assert plan.allowed[5].tolist() == [1, 0, 1, 0, 0, 1]
    assert plan.of_labels(np.array([[1, 2], [0, 0]])).tolist() == [[1, 0, 1, 0, 0, 1], [1, 1, 0, 1, 0, 0]]
    assert plan.allowed.sum(axis=1).tolist() == [3] * 6
    assert start_theta(plan) == pytest.approx([0.7 / 0.9, 0.1 / 0.9, 0.1 / 0.9])


def test_layout_with_a_pair_of_traits_adds_each_pair_of_their_classes():
    plan = layout((2, 3), pairs=[(1, 0)])
    assert plan.pairs == ((0, 1),) and plan.sources == 1 + 5 + 6 and plan.kinds == 4
    assert plan.kind.tolist() == [0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3]
    # combination (1, 2) also posts pair (1, 2), the sixth pair (row-major over 2 x 3)
    assert plan.allowed[5].tolist() == [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    assert plan.allowed[:, 6:].sum(axis=0).tolist() == [1] * 6  # each pair: one combination
    assert start_theta(plan) == pytest.approx(np.array([0.7, 0.1, 0.1, 0.1]) / 1.0)
    assert layout((2, 3), pairs=[]).sources == 6


@pytest.mark.parametrize("pairs", [[(0, 0)], [(0, 1), (1, 0)], [(0, 3)], [(0,)], [5], None])
def test_bad_pairs_are_refused(pairs):
    with pytest.raises(ValueError, match="latent source pairs must be distinct pairs of two of 3 traits"):
        check_pairs(pairs, 3)


def test_em_puts_an_item_of_two_classes_at_once_in_their_pair():
    """Two traits of two classes. A user's telling images show the item of its *combination* of
    classes (four items, near the plane's diagonals), the rest a noise item. With the pair's
    sources, EM takes the items' images for their pair; read back, one such image speaks for
    both traits' classes."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(80), 5)
    labels = np.stack([users % 2, (users // 2) % 2], axis=1)
    telling = rng.random(len(users)) < 0.5
    angle = np.pi / 4 + np.pi / 2 * (2 * labels[:, 0] + labels[:, 1])
    item = np.stack([np.cos(angle), np.sin(angle), np.zeros(len(users))], axis=1)
    rows = np.where(telling[:, None], item, [0.0, 0.0, 1.0]) + rng.normal(scale=0.05, size=(len(users), 3))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    plan = layout((2, 2), pairs=[(0, 1)])
    sources = fit_sources(rows, labels, plan, k=10, temperature=0.1, rounds=4)
    r = sources.responsibilities
    pair = 5 + 2 * labels[:, 0] + labels[:, 1]  # each image's user's pair source
    assert r.shape == (400, 9) and np.allclose(r.sum(axis=1), 1.0)
    assert r[telling, pair[telling]].min() > 0.5 > 0.3 > r[~telling, pair[~telling]].max()
    assert (r[~telling].argmax(axis=1) == 0).all() and sources.theta[3] > 0.3  # noise stays noise; the pairs' share
    q = read_sources(*nearest(rows, rows, 10, 0.1, exclude_same=True), r, sources.pi, 1.0) / sources.pi
    loglike = np.log(q @ sources.emission.T)  # (images, 4 combinations)
    mine = 2 * labels[:, 0] + labels[:, 1]
    best_other = np.max(np.where(np.eye(4, dtype=bool)[mine], -np.inf, loglike), axis=1)
    assert (loglike[np.arange(400), mine] - best_other)[telling].min() > np.log(5)


def test_nearest_leaves_out_the_image_itself_and_exact_duplicates():
    bank = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    index, weight = nearest(bank, bank, 2, 1.0, exclude_same=True)
    assert sorted(index[0].tolist()) == [2, 3]  # rows 0 and 1 are the same image
    best = np.argmax(weight[0])
    assert index[0, best] == 2 and weight[0, best] == pytest.approx(1.0)
    assert weight[0].min() == pytest.approx(np.exp(0.0 - 0.6))
    index, _ = nearest(bank[:1], bank, 1, 1.0, exclude_same=False)
    assert index[0, 0] in (0, 1)


def test_read_sources_by_hand():
    r = np.array([[0.0, 1.0], [1.0, 0.0]])
    pi = np.array([0.5, 0.5])
    q = read_sources(np.array([[0, 1]]), np.array([[1.0, 0.5]]), r, pi, alpha=1.0)
    # votes (0.5, 1.0) plus one pseudo-vote (0.5, 0.5), over 1.5 + 1
    assert q[0].tolist() == pytest.approx([1.0 / 2.5, 1.5 / 2.5])


def test_em_finds_the_telling_items_among_noise():
    """One trait, two classes. Half of a user's images show its class's item (near (1, 0) for
    class 1, near (-1, 0) for class 0), the rest a noise item (near (0, 1)) that everyone posts.
    Four rounds of EM single out the items' images as their class's source; the noise item's stay noise."""
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 5)
    labels = (users % 2)[:, None]
    telling = rng.random(len(users)) < 0.5
    item = np.where(labels[:, 0] == 1, 1.0, -1.0)
    rows = np.stack([np.where(telling, item, 0.0), np.where(telling, 0.0, 1.0)], axis=1)
    rows += rng.normal(scale=0.05, size=rows.shape)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    sources = fit_sources(rows, labels, layout((2,)), k=10, temperature=0.1, rounds=4)
    r = sources.responsibilities
    assert r.shape == (200, 3) and np.allclose(r.sum(axis=1), 1.0)
    mine = 1 + labels[:, 0]  # each image's user's class's source
    # every telling image is taken for its class's source more than any noise image is
    assert r[telling, mine[telling]].min() > 0.45 > 0.3 > r[~telling, mine[~telling]].max()
    assert r[~telling, 0].mean() > 0.8 and not r[:, 1][labels[:, 0] == 1].any()  # never another class
    assert sources.theta.sum() == pytest.approx(1.0) and 0.6 < sources.theta[0] < 0.8
    # read back: an item's image is far likelier under its class; a noise image says less than any item's
    q = read_sources(*nearest(rows, rows, 10, 0.1, exclude_same=True), r, sources.pi, 1.0) / sources.pi
    ratio = np.log(q @ sources.emission.T)
    ratio = ratio[:, 1] - ratio[:, 0]  # log-likelihood ratio, class 1 against class 0
    sign = np.where(labels[:, 0] == 1, 1.0, -1.0)
    assert (sign * ratio)[telling].min() > np.log(5)
    assert np.abs(ratio[~telling]).max() < (sign * ratio)[telling].min() and np.abs(ratio[~telling]).mean() < 0.5


def test_within_whitening_by_hand():
    # source 0 at (+-1, 0), source 1 at (+-1, 2): within-source spread diag(1, 0); shrunk by
    # half towards its mean spread 0.5: diag(0.75, 0.25), whitened by e0 / sqrt(0.75) and
    # e1 / 0.5; the images' whole spread along them is 1 / 0.75 and 4, so e1's axis comes first
    rows = np.array([[-1.0, 0], [1, 0], [-1, 2], [1, 2]])
    r = np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    axes = within_whitening(rows, r, 0.5)
    np.testing.assert_allclose(np.abs(axes), [[0, 1 / np.sqrt(0.75)], [2, 0]], atol=1e-12)
    # with soft responsibilities the shrunk within-source scatter becomes the identity
    rng = np.random.default_rng(0)
    rows, r = rng.normal(size=(200, 5)), rng.dirichlet(np.ones(3), size=200)
    axes = within_whitening(rows, r, 0.2)
    means = (r.T @ rows) / r.sum(axis=0)[:, None]
    scatter = sum(((rows - m) * w[:, None]).T @ (rows - m) for m, w in zip(means, r.T)) / len(rows)
    shrunk = 0.8 * scatter + 0.2 * np.trace(scatter) / 5 * np.eye(5)
    np.testing.assert_allclose(axes.T @ shrunk @ axes, np.eye(5), atol=1e-10)
    spread = (rows @ axes).var(axis=0)
    assert (np.diff(spread) <= 1e-12).all()


def test_within_whitening_makes_an_images_neighbours_its_own_sources():
    # two sources 0.3 apart on axis 1 while every image varies ten times as much on axis 0
    # (the nuisance: rendering, clutter), all 5 out on axis 2: by cosine, an image's ten
    # nearest are 82 % of its own source; on the whitened axes, 97 %
    rng = np.random.default_rng(1)
    source = np.repeat([0, 1], 200)
    rows = np.stack([rng.normal(0, 3, 400), 0.3 * source + rng.normal(0, 0.05, 400), np.full(400, 5.0)], axis=1)

    def own(points):
        unit = points / np.linalg.norm(points, axis=1, keepdims=True)
        index, _ = nearest(unit, unit, 10, 0.05, exclude_same=True)
        return (source[index] == source[:, None]).mean()

    before = own(rows)
    after = own(rows @ within_whitening(rows, np.eye(2)[source], 0.1))
    assert before == pytest.approx(0.818, abs=0.001) and after == pytest.approx(0.967, abs=0.001)


def test_label_reading_by_hand():
    """Sources noise, A, B; users may post A (images 0, 1, 3) or B (image 2): shares 1, 3/4, 1/4.
    Image 0 reads neighbours 1 (may post A) and 2 (may post B), both with weight 1, trust 1/2:
    A: (1/2 / (3/4) + 1/2) * (0 + 1/2) = 7/12; B: (1/2) * (1/2 / (1/4) + 1/2) = 5/4; noise 1."""
    allowed = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [1, 1, 0]], float)
    q = label_reading(allowed, np.array([[1, 2]]), np.array([[1.0, 1.0]]), 0.5)
    assert q == pytest.approx(np.array([[1.0, 7 / 12, 5 / 4]]))
    # a neighbour of half weight counts half in the exponent; the ratios are capped at e^30
    q = label_reading(allowed, np.array([[1, 2]]), np.array([[1.0, 0.5]]), 0.5)
    assert q == pytest.approx(np.array([[1.0, (7 / 6) * 0.5 ** 0.5, 0.5 * 2.5 ** 0.5]]))
    many = np.ones((1, 400), np.int64)  # 400 neighbours all of an A user: A's ratio would be (7/6)^400 ~ e^62
    assert label_reading(allowed, many, np.ones((1, 400)), 0.5)[0, 1] == pytest.approx(np.exp(30.0))


def test_em_started_from_the_labels_keeps_a_chance_noise_item_noise():
    """One trait, two classes, 60 users of each; each user posts 4 images. A class-1 item
    (near (1, 0)) is posted once by 20 class-1 users; a noise item (near (0, 1)) by every
    user; and a second noise item (near (-1, 0)) that 12 class-1 and 8 class-0 users
    happened to post. Started from the users' labels alone, three rounds of EM leave the
    item at about a third and give the chance item's class-1 images about a sixth of the
    class; started from the neighbours' labels (each class-0 neighbour counting against the
    class), with every neighbour trusted alike or by rank, they find the item and keep the
    chance item noise."""
    rng = np.random.default_rng(0)
    labels, rows, kind = [], [], []  # kind: 0 noise, 1 the class-1 item, 2 the chance noise item
    for user in range(120):
        cls = user % 2
        posts = [(0.0, 1.0, 0)] * 2
        if cls == 1 and user < 40:
            posts.append((1.0, 0.0, 1))
        if (cls == 1 and 40 <= user < 64) or (cls == 0 and user < 16):
            posts.append((-1.0, 0.0, 2))
        posts += [(0.0, 1.0, 0)] * (4 - len(posts))
        for x, y, k in posts:
            labels.append([cls])
            rows.append([x, y])
            kind.append(k)
    labels, kind = np.array(labels), np.array(kind)
    rows = np.array(rows) + rng.normal(scale=0.05, size=(len(kind), 2))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    chance = (kind == 2) & (labels[:, 0] == 1)
    plain = fit_sources(rows, labels, layout((2,)), k=20, temperature=0.1, rounds=3)
    started = fit_sources(rows, labels, layout((2,)), k=20, temperature=0.1, rounds=3, start=(0.8, 0.1))
    by_rank = fit_sources(rows, labels, layout((2,)), k=20, temperature=0.1, rounds=3, start=(0.8, 0.1, True))
    for sources in (plain, started, by_rank):
        r = sources.responsibilities
        assert r.shape == (len(kind), 3) and np.allclose(r.sum(axis=1), 1.0)
        assert not r[labels[:, 0] == 0, 2].any() and not r[labels[:, 0] == 1, 1].any()  # never another class
    r = plain.responsibilities
    assert r[kind == 1, 2].max() < 0.4 and 0.1 < r[chance, 2].mean() < 0.2
    r = started.responsibilities
    assert r[kind == 1, 2].min() > 0.9 and r[chance, 2].max() < 0.02 and r[kind == 0, 0].mean() > 0.95
    # by rank: the 480 images' label agreement trusts the first 11 neighbours fully and the
    # rest at about a quarter (the item has 20 images; the figures per rank are noisy at
    # this size), so the chance item's vetoes are weaker but it still stays mostly noise
    r = by_rank.responsibilities
    assert r[kind == 1, 2].min() > 0.9 and r[chance, 2].max() < 0.08 and r[kind == 0, 0].mean() > 0.94


def test_rank_agreement_by_hand():
    """Four images, neighbours (most similar first) 1, 2 / 0, 3 / 3, 0 / 2, 1. Trait A's
    classes 0, 0, 1, 1 (chance 1/2): the first neighbours all agree (excess 1), the second
    none (-1, counted 0). Trait B (0, 0, 0, 1; chance 5/8) agrees half the time at both
    ranks, below chance: 0. A trait with one class says nothing and is left out."""
    index = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])
    a, b, one = [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]
    assert rank_agreement(np.array([a]).T, index).tolist() == [1.0, 0.0]
    assert rank_agreement(np.array([a, b, one]).T, index).tolist() == [1.0, 0.0]  # (1/2, 0) over A and B, / 1/2
    # trait C (0, 1, 0, 1) agrees at the second rank only: A and C together trust both ranks alike
    assert rank_agreement(np.array([a, [0, 1, 0, 1]]).T, index).tolist() == [1.0, 1.0]
    assert rank_agreement(np.array([b, one]).T, index).tolist() == [0.0, 0.0]


def test_a_start_by_rank_whose_neighbours_agree_by_chance_is_the_plain_start():
    """Where no rank's labels agree beyond chance, every neighbour's trust is 0 and the
    start reads nothing: the same sources as the plain start."""
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(60, 4))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    labels = np.zeros((60, 2), np.int64)  # every user of the same classes
    plan = layout((2, 3))
    plain = fit_sources(rows, labels, plan, k=5, temperature=0.1, rounds=2)
    started = fit_sources(rows, labels, plan, k=5, temperature=0.1, rounds=2, start=(0.8, 0.2, True))
    np.testing.assert_array_equal(started.responsibilities, plain.responsibilities)


def test_nearest_lists_the_neighbours_most_similar_first():
    rng = np.random.default_rng(4)
    bank = rng.normal(size=(40, 3))
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    index, weight = nearest(bank[:5], bank, 7, 0.1, exclude_same=True)
    similarity = np.take_along_axis(bank[:5] @ bank.T, index, axis=1)
    assert (np.diff(similarity, axis=1) <= 0).all() and (np.diff(weight, axis=1) <= 0).all()
    assert (weight[:, 0] == 1.0).all() and (index != np.arange(5)[:, None]).all()
