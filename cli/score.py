"""``profiler score``: score submissions against a truth file and print the paper's tables."""
from __future__ import annotations

from pathlib import Path

import click

from cli.common import (SEED, Choice, FloatRange, echo_problems, output_option, refuse_output_over_inputs,
                        write_output)


@click.command()
@click.option("--truth", "-t", type=click.Path(exists=True), required=True,
              help="Truth file (txt, CSV or JSON lines), or a dataset folder holding one.")
@click.argument("submissions", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--name", "names", multiple=True,
              help="Row name for each submission, in order  [default: the file name]")
@click.option("--submission-format", type=Choice(["auto", "txt", "csv", "jsonl"]), default="auto",
              help="Format of the submission files.")
@click.option("--average", type=Choice(["macro", "weighted"]), default="macro",
              help="How P, R and F average over classes.")
@click.option("--f-measure", type=Choice(["mean", "pan"]), default="mean",
              help="F as the mean of per-class F1, or PAN's harmonic mean of P and R.")
@click.option("--with-paper", is_flag=True, help="Add the paper's own rows, labelled as quoted.")
@click.option("--baselines", is_flag=True,
              help="Add majority-class and stratified-random rows computed from the truth.")
@click.option("--bootstrap", type=click.IntRange(0, 100000), default=0,
              help="Resamples of the users for 95% intervals of F and Acc (0: none).")
@click.option("--seed", type=SEED, default=0, help="Seed for --bootstrap and the random baseline.")
@click.option("--format", "fmt", type=Choice(["markdown", "csv", "json", "latex"]), default="markdown",
              help="Output format.")
@output_option("Write the tables to this file (atomically) instead of stdout.")
@click.option("--plots", type=click.Path(file_okay=False), default=None,
              help="Write confusion-matrix heat-maps (PNG) into this folder.")
@click.option("--ignore-extra", is_flag=True,
              help="Warn about, rather than reject, users that are not in the truth.")
@click.option("--at-precision", type=FloatRange(0, 1, min_open=True, max_open=True), default=0.9,
              show_default=True,
              help="For probability outputs: the precision at which each class's recall is reported.")
def score(truth, submissions, names, submission_format, average, f_measure, with_paper, baselines,
          bootstrap, seed, fmt, output, plots, ignore_extra, at_precision):
    """Score SUBMISSIONS against the truth and print the paper's Tables 1-5.

    A submission has the truth file's format (user_id:::gender:::location:::occupation),
    or CSV with a header, or JSON lines. Every submission is validated first and every
    problem reported (file, line); an invalid one exits with code 1 and nothing is
    scored. Users missing from a submission count as wrong.

    'profiler predict' outputs with probabilities (json, jsonl, csv) are recognised and
    scored twice: their labels in the paper's tables, and their probabilities per trait
    (log loss, Brier score, expected calibration error, ROC-AUC and PR-AUC one class
    against the rest, and each class's recall at precision --at-precision with the
    threshold that reaches it). Each user's probabilities must cover every class and
    sum to 1.

    Examples:

    \b
        profiler score --truth data/sample/test model1.txt model2.txt --with-paper --baselines
        profiler score --truth data/sample/test set.json --at-precision 0.8
    """
    from profiler import evaluation, probabilities

    if not submissions and not baselines:
        raise click.UsageError("give at least one SUBMISSION file, or --baselines")
    if names and len(names) != len(submissions):
        raise click.UsageError(f"{len(names)} --name given for {len(submissions)} submissions")
    refuse_output_over_inputs(output, {"the truth file": truth, "a submission": list(submissions)})
    table = evaluation.load_truth_for_scoring(truth)
    runs, scored = {}, {}
    invalid = []
    for i, path in enumerate(submissions):
        name = names[i] if names else Path(path).stem
        if name in runs:
            raise click.UsageError(f"two submissions are named {name!r}; use --name")
        if submission_format == "auto" and probabilities.sniff(path):
            sub = probabilities.load_probabilities(path, table, name=name, ignore_extra=ignore_extra)
            scored[name] = sub.probabilities
        else:
            sub = evaluation.load_submission(path, table, name=name, fmt=submission_format,
                                             ignore_extra=ignore_extra)
        echo_problems(sub.problems)
        if not sub.valid:
            invalid.append(path)
        runs[name] = sub.predictions
    if invalid:
        raise click.ClickException(f"{len(invalid)} invalid submission(s), nothing scored: "
                                   + ", ".join(invalid))
    results = {name: evaluation.score(table, preds, average=average, f_measure=f_measure,
                                      bootstrap=bootstrap, seed=seed)
               for name, preds in runs.items()}
    for name, probs in scored.items():
        results[name]["probabilities"] = probabilities.probability_scores(table, probs, precision=at_precision)
    for name, result in results.items():  # abstentions ("unknown"): counted wrong in the tables, and apart here
        parts = [f"{t} {r['abstained']} (coverage {r['coverage']:.3f}, accuracy among decided "
                 f"{r['accuracy_decided'] if r['accuracy_decided'] is None else round(r['accuracy_decided'], 3)})"
                 for t, r in result["traits"].items() if r["abstained"]]
        if parts:
            click.echo(f"{name}: abstained ('unknown', counted wrong) on " + "; ".join(parts), err=True)
    if baselines:
        results.update(evaluation.score_baselines(table, seed=seed, average=average,
                                                  f_measure=f_measure, bootstrap=bootstrap))
    from profiler.reports import render

    write_output(render(results, fmt=fmt, with_paper=with_paper), output)
    if plots:
        from profiler.plots import confusion_heatmaps

        written = confusion_heatmaps(results, Path(plots))
        click.echo(f"wrote {len(written)} confusion matrices to {plots}", err=True)
