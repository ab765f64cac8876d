"""Evaluating a run's predictions: the table scored in memory equals its submission file scored."""
import numpy as np
import pandas as pd

from core.labels import LABELS, TRAITS
from profiler.runs import score_files, score_table, summary_table, write_submission


def table_and_truth(tmp_path, users=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"u{i:02d}" for i in range(users)]
    truth = {t: [LABELS[t][i % len(LABELS[t])] for i in range(users)] for t in TRAITS}
    (tmp_path / "truth.txt").write_text("".join(
        ":::".join([u, *(truth[t][i] for t in TRAITS)]) + "\n" for i, u in enumerate(ids)))
    rows = []
    for i, u in enumerate(ids):
        failed = i == 3  # a user with no usable image: no prediction, counted wrong
        rows.append({"user_id": u, "error": "no usable image" if failed else None,
                     **{t: None if failed else LABELS[t][rng.integers(len(LABELS[t]))] for t in TRAITS}})
    return pd.DataFrame(rows), tmp_path / "truth.txt"


def test_a_table_scores_as_its_submission_file(tmp_path):
    from profiler.evaluation import load_truth_for_scoring

    table, truth_path = table_and_truth(tmp_path)
    truth = load_truth_for_scoring(truth_path)
    write_submission(table, tmp_path / "sub.txt")
    assert len((tmp_path / "sub.txt").read_text().splitlines()) == 11
    in_memory = score_table(truth, table, bootstrap=200, seed=1)
    from_file = score_files(truth_path, {"m": tmp_path / "sub.txt"}, baselines=False, bootstrap=200, seed=1)["m"]
    assert in_memory["n_missing"] == from_file["n_missing"] == 1
    for t in TRAITS:
        assert in_memory["traits"][t]["F"] == from_file["traits"][t]["F"]
        assert in_memory["traits"][t]["ci95"] == from_file["traits"][t]["ci95"]


def test_summary_table_shows_intervals_and_fractions_of_the_ceiling(tmp_path):
    table, truth_path = table_and_truth(tmp_path)
    from profiler.evaluation import load_truth_for_scoring

    result = score_table(load_truth_for_scoring(truth_path), table, bootstrap=100)
    low, high = result["traits"]["gender"]["ci95"]["F"]
    text = summary_table({"m": result}, ceiling={t: {"F": 1.0, "Acc": 1.0} for t in TRAITS})
    assert f"{result['traits']['gender']['F']:.3f} ({low:.2f}-{high:.2f})" in text
    assert "As fractions of the Bayes rule's" in text
