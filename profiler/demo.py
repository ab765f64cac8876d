"""The end-to-end demo: from nothing to ``results/``.

Sample data, the set model and the paper's two models trained, the test split
predicted and scored beside baselines, the paper's rows, an item oracle, the
instance-probe reference and the sample data's Bayes ceiling.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from core.io import atomic_write_text
from core.labels import TRAITS
from profiler.reports import probability_tables
from profiler.runs import (BOOTSTRAP, calibration_report, calibration_table, predict_dataset, probability_report,
                           score_files, score_table, summary_table, versions, write_calibration,
                           write_submission, write_tables)

BAYES_NAME = "Bayes rule (ceiling)"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


SYSTEM_NAMES = {"set": "Set model (frozen encoder + head)", "model1": "3D CNN Model 1",
                "model2": "3D CNN Model 2"}


def _train_once(name: str, config, data, run_dir: Path, progress: bool, timings: dict) -> dict:
    """Train ``name`` into ``run_dir`` unless a finished run with the same config is there."""
    from profiler.training import train

    done = (run_dir / "summary.json").is_file() and json.loads(
        (run_dir / "config.json").read_text()) == config.to_json()
    if done:
        _log(f"      {name}: reusing the finished run in {run_dir}")
        return json.loads((run_dir / "summary.json").read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)
    _log(f"      training {name} ({config.epochs} epochs at most) -> {run_dir}")
    t = time.perf_counter()
    summary = train(data, run_dir, config, progress=progress)
    timings[f"train_{name}_s"] = time.perf_counter() - t
    return summary


def demo(out: str | Path = "results", *, data: str | Path = "data/sample",
         runs: str | Path = "runs/demo", users: int = 1000, seed: int = 0, epochs: int = 8,
         size: int = 64, workers: int | None = None, progress: bool = True) -> dict:
    """Sample data -> train the set model, Model 1 and Model 2 -> predict the test split -> score.

    ``epochs`` caps the 3D CNNs' training; the set model uses its preset's. The set
    model's embedding cache is ``RUNS/embeddings.sqlite``, so a second demo embeds nothing.
    """
    from data_prep.cache import PrepareConfig, default_workers, prepare
    from data_prep.dataset import load_dataset
    from data_prep.sample.generate import SampleConfig, generate
    from data_prep.sample.oracle import NAME as ORACLE_NAME
    from data_prep.sample.oracle import oracle_submission
    from data_prep.sample.probe import NAME as PROBE_NAME
    from data_prep.sample.probe import probe_submission
    from profiler.config import resolve
    from profiler.evaluation import load_truth_for_scoring
    from profiler.embeddings import STORE_NAME, EmbeddedData, EmbeddingStore
    from profiler.encoders import get_encoder
    from profiler.plots import contact_sheet

    start = time.perf_counter()
    out, data, runs = Path(out), Path(data), Path(runs)
    workers = workers or default_workers()
    timings = {}
    meta_path = data / "generator.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    if meta and meta.get("seed") == seed and sum(meta["users"].values()) == users:
        _log(f"[1/5] sample data: reusing {data}")
    else:
        _log(f"[1/5] sample data: {users} users into {data}")
        t = time.perf_counter()
        meta = generate(data, SampleConfig(users=users, seed=seed), workers=workers,
                        force=data.exists(), progress=progress)
        timings["sample_data_s"] = time.perf_counter() - t
    configs = {"set": resolve("default", overrides={"model": "set", "seed": seed})}
    configs.update({name: resolve("default", overrides={"model": name, "epochs": epochs, "seed": seed,
                                                          "size": size})
                    for name in ("model1", "model2")})
    store_path = runs / STORE_NAME
    encoder = get_encoder(configs["set"].encoder)
    _log(f"[2/5] embedding the training images with {encoder.identity} (cache: {store_path})")
    t = time.perf_counter()
    with EmbeddingStore(store_path) as store:
        embedded = EmbeddedData.for_training(load_dataset(data / "train"), configs["set"], store,
                                             encoder=encoder, progress=progress)
        timings["embed_train_s"] = time.perf_counter() - t
        timings["embed_train_images_new"] = store.misses
    _log("[3/5] training the set model, then preparing the images for the 3D CNNs and training them")
    summaries = {"set": _train_once("set", configs["set"], embedded, runs / "set", progress, timings)}
    t = time.perf_counter()
    cache = prepare(data / "train", runs / "cache", config=PrepareConfig(height=size, width=size),
                    workers=workers, progress=progress)
    timings["prepare_s"] = time.perf_counter() - t
    for name in ("model1", "model2"):
        summaries[name] = _train_once(name, configs[name], cache, runs / name, progress, timings)
    _log("[4/5] predicting the test split with each model")
    truth = load_truth_for_scoring(data / "test")
    results, calibration, tables, probability_scores = {}, {}, {}, {}
    for name in ("set", "model1", "model2"):
        t = time.perf_counter()
        with EmbeddingStore(store_path) as store:
            predicted = predict_dataset(runs / name / "model.keras", data / "test", workers=workers,
                                        progress=progress, store=store)
            if name == "set":
                timings["predict_set_images_new"] = store.misses
        timings[f"predict_{name}_s"] = time.perf_counter() - t
        timings[f"predict_{name}_users_per_s"] = len(predicted) / timings[f"predict_{name}_s"]
        write_submission(predicted, out / "submissions" / f"{name}.txt")
        tables[name] = predicted
        results[SYSTEM_NAMES[name]] = score_table(truth, predicted, bootstrap=BOOTSTRAP, seed=seed)
        calibration[SYSTEM_NAMES[name]] = calibration_report(truth, predicted)
        probability_scores[SYSTEM_NAMES[name]] = probability_report(truth, predicted)
    test_users = len(predicted)
    t = time.perf_counter()
    unusual = unusual_check(tables, data / "unusual", runs, store_path, seed=seed, workers=workers)
    timings["unusual_check_s"] = time.perf_counter() - t
    atomic_write_text(out / "ood.json", json.dumps(unusual, indent=2) + "\n")
    _log("[5/5] scoring and writing results")
    submissions = {}
    oracle_submission(data, out / "submissions" / "item_oracle.txt")
    submissions[ORACLE_NAME] = out / "submissions" / "item_oracle.txt"
    t = time.perf_counter()
    with EmbeddingStore(store_path) as store:  # the test images are all in the cache by now
        embedded_test = EmbeddedData.for_training(load_dataset(data / "test"), configs["set"], store,
                                                  encoder=encoder)
    probe_submission(data, embedded, embedded_test, out / "submissions" / "instance_probe.txt")
    timings["instance_probe_s"] = time.perf_counter() - t
    submissions[PROBE_NAME] = out / "submissions" / "instance_probe.txt"
    shutil.copyfile(data / "bayes_rule_test.txt", out / "submissions" / "bayes_rule.txt")
    submissions[BAYES_NAME] = out / "submissions" / "bayes_rule.txt"
    results |= score_files(data / "test", submissions, seed=seed, bootstrap=BOOTSTRAP)
    write_tables(results, out)
    write_calibration(calibration, out)
    atomic_write_text(out / "probabilities.md", "# Probability scores on the sample test split (`make demo`)\n\n"
                      + probability_tables(probability_scores))
    atomic_write_text(out / "probabilities.json", json.dumps(probability_scores, indent=2) + "\n")
    for name in ("set", "model1", "model2"):
        shutil.copyfile(runs / name / "curves.png", out / f"training_curves_{name}.png")
        shutil.copyfile(runs / name / "summary.json", out / f"training_summary_{name}.json")
    contact_sheet(data / "test", out / "sample_contact_sheet.png")
    shutil.copyfile(meta_path, out / "generator.json")
    ceiling = {t: results[BAYES_NAME]["traits"][t] for t in TRAITS}
    table = summary_table(results, ceiling)
    timings["total_s"] = time.perf_counter() - start
    atomic_write_text(out / "versions.json", json.dumps(versions(), indent=2) + "\n")
    atomic_write_text(out / "demo_timings.json", json.dumps(timings, indent=2) + "\n")
    lines = [
        "# Results of `make demo`", "",
        f"Sample data: {meta['users']['train']} train and {meta['users']['test']} test users, seed "
        f"{seed} (`generator.json`). The set model: {encoder.description}, frozen, and a head "
        f"trained with the `default` preset (at most {configs['set'].epochs} epochs). The 3D CNNs: "
        f"the `default` preset for at most {epochs} epochs at {size} px. Each model is the "
        "checkpoint with the best validation mean macro-F.", "",
        decision_rules({name: runs / name / "model.keras" for name in ("set", "model1", "model2")}), "",
        "Macro-F (F) and accuracy (Acc) on the test split. The Bayes rule is the best any reader "
        "of the images could do (the sample data's ceiling). The item oracle reads which emoji each "
        "image shows from the answer key and learns from the training split: what the training "
        "data allows with a perfect encoder. The instance-probe reference reads the set model's own "
        "image embeddings through a linear probe trained with each training image's answer-key "
        "group (its signal class or noise) and combines the images per user with the generator's "
        "probabilities, as the Bayes rule does: the limit of the encoder's features. Read down "
        "the column: ceiling -> instance probe (what the features cost) -> the set model (what "
        "learning from user labels alone costs).", "",
        table, "",
        "Calibration of the probabilities on the test split: each head's temperature, fitted on "
        "the validation split when training ended (Guo et al. 2017) after the outputs were shifted "
        "back to the training users' class shares (the models train with balanced class weights), "
        "and the log loss, Brier score and expected calibration error (15 bins) of the raw softmax "
        "-> as predicted (`calibration.json`, reliability diagrams `reliability_*.png`).", "",
        calibration_table(calibration), "",
        f"Out of distribution: every prediction carries a score (`ood`) of how unlike the training "
        f"images a user's images are (`profiler.ood`). It tells the {test_users} test users from "
        f"{UNUSUAL_PER_KIND} users each of solid colours, noise and photographs (`{data / 'unusual'}`) "
        "with this ROC-AUC; the last columns: the share of each that `--decide ...,ood=0.99` sets to "
        "`unknown` (`ood.json`).", "",
        unusual_table(unusual), "",
        "What a moderator sets thresholds by: per trait, ROC-AUC and PR-AUC one class against the rest "
        "(macro), and how many classes some threshold names with precision 0.9 on the test users, with "
        "their recall (`probabilities.md` has every class, `profiler score` the same for any output).", "",
        precision_table(probability_scores), "",
        _cost_lines(timings, summaries, embedded, test_users), "",
        "The paper's Tables 1-5 with its own rows beside ours: `tables.md` (`tables.csv`). "
        "Confusion matrices: `confusion_*.png`. Training curves: `training_curves_*.png`.",
    ]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return {"out": str(out), "table": table, "timings": timings, "summaries": summaries}


UNUSUAL_PER_KIND = 50


def decision_rules(models: dict[str, Path]) -> str:
    """A sentence naming each model's default decision rule and, for ``macro``, its exponents."""
    from profiler.decisions import Decider
    from profiler.models import load_model
    from profiler.models.io import model_info

    parts = []
    for name, path in models.items():
        decider = Decider(None, model_info(load_model(path)))
        exponents = decider.describe().get("exponents")
        parts.append(f"{SYSTEM_NAMES[name]} `{decider.text}`" + (
            " (a = " + " / ".join(f"{exponents[t]:g}" for t in TRAITS) + ")" if exponents else ""))
    return ("Labels by each model's default decision rule (`profiler predict --decide`); `macro` names "
            "the class with the highest p / share^a, with a per trait (gender / location / occupation) "
            "from 0 (argmax) to 1 (balanced), the one with the best macro-F on the validation split: "
            + "; ".join(parts) + ".")


def unusual_check(tables: dict, folder: Path, runs: Path, store_path: Path, *, seed: int, workers: int) -> dict:
    """The out-of-distribution check of each model (``profiler.ood.check``): its test users'
    scores (``tables``: the predicted test split per model) against users of unusual images,
    made in ``folder`` if they are not there."""
    from data_prep.sample.unusual import KINDS, make_unusual_users
    from profiler import ood
    from profiler.embeddings import EmbeddingStore

    marker = folder / "made.json"
    wanted = {"per_kind": UNUSUAL_PER_KIND, "seed": seed}
    if not marker.is_file() or json.loads(marker.read_text()) != wanted:
        _log(f"      making {UNUSUAL_PER_KIND} users each of {', '.join(KINDS)} in {folder}")
        if folder.exists():
            shutil.rmtree(folder)
        make_unusual_users(folder, UNUSUAL_PER_KIND, seed=seed)
        atomic_write_text(marker, json.dumps(wanted) + "\n")
    out = {}
    for name, table in tables.items():
        with EmbeddingStore(store_path) as store:
            odd = predict_dataset(runs / name / "model.keras", folder, workers=workers, progress=False, store=store)
        kinds = odd["user_id"].str.split("-").str[1]
        out[SYSTEM_NAMES[name]] = ood.check(table["ood"].to_numpy(float),
                                            {k: odd.loc[kinds == k, "ood"].to_numpy(float) for k in KINDS},
                                            table.attrs["model"]["ood"]["validation"])
    return out


def precision_table(scored: dict) -> str:
    """Per system and trait: macro ROC-AUC and PR-AUC, and the classes reaching precision 0.9."""
    from tabulate import tabulate

    rows = []
    for name, traits in scored.items():
        for t, r in traits.items():
            reached = {c: v["recall_at_precision"] for c, v in r["per_class"].items() if v["threshold"] is not None}
            rows.append({"system": name, "trait": t, "ROC-AUC": r["roc_auc"], "PR-AUC": r["pr_auc"],
                         f"classes at precision {r['at_precision']:g} (recall)":
                             f"{len(reached)} of {len(r['per_class'])}"
                             + (": " + ", ".join(f"{c} {v:.2f}" for c, v in reached.items()) if reached else "")})
    return tabulate(rows, headers="keys", tablefmt="github", floatfmt=".3f")


def unusual_table(report: dict) -> str:
    """The out-of-distribution check as a Markdown table."""
    from tabulate import tabulate

    rows = [{"system": name, "ROC-AUC": r["roc_auc"], **{k: v for k, v in r["roc_auc_per_kind"].items()},
             "abstain at 0.99: test users": r["abstain"]["0.99"]["known"],
             "unusual users": r["abstain"]["0.99"]["unusual"]} for name, r in report.items()]
    return tabulate(rows, headers="keys", tablefmt="github", floatfmt=".3f")


def _cost_lines(timings: dict, summaries: dict, embedded, test_users: int) -> str:
    """The cost of each model in this run, as a short Markdown list."""
    lines = ["Cost in this run (2-core CPU; `demo_timings.json`):"]
    new = timings.get("embed_train_images_new", 0)
    if new:
        lines.append(f"- embedding: {new} new training images in {timings['embed_train_s']:.0f} s "
                     f"({timings['embed_train_s'] / new * 1000:.0f} ms an image, decoding included)")
    else:
        lines.append(f"- embedding: all {len(embedded.vectors)} training images came from the cache "
                     f"({timings['embed_train_s']:.1f} s)")
    for name in ("set", "model1", "model2"):
        s = summaries[name]
        trained = timings.get(f"train_{name}_s")
        lines.append(f"- {SYSTEM_NAMES[name]}: {s['parameters']:,} parameters "
                     f"({s.get('trained_parameters', s['parameters']):,} trained), "
                     f"{s['epochs_run']} epochs at {s['seconds_per_epoch']:.1f} s"
                     + (f" ({trained:.0f} s in all)" if trained else " (reused)")
                     + f"; predict {test_users} test users at {timings[f'predict_{name}_users_per_s']:.1f} "
                     "users/s end to end"
                     + (f" ({timings['predict_set_images_new']} new images embedded)" if name == "set" else ""))
    return "\n".join(lines)
