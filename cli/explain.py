"""``profiler explain``: which of a user's images made each prediction, as a contact sheet."""
from __future__ import annotations

import click

from cli.common import embeddings_option, refuse_output_over_inputs


@click.command()
@click.argument("user_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "-m", "model_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="A .keras model from 'profiler train'.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Write the contact sheet here, atomically: PDF, SVG or JPEG where the name ends "
                   "so (.pdf, .svg, .jpg), PNG otherwise.")
@click.option("--decide", default=None, metavar="RULE",
              help="The decision rule whose labels are explained (as for 'profiler predict')  "
                   "[default: the model's]")
@embeddings_option()
def explain(user_dir, model_path, output, decide, store_path):
    """Explain one user's profile: each image's effect on each trait's prediction.

    Each image is taken out in turn (left out of the set model's set; blacked out of a 3D
    CNN's volume) and the fall of the predicted class's probability is its effect:
    positive, the image speaks for the class; negative, against it. Prints the images by
    effect per trait; with -o, draws them as a contact sheet, most supportive first.

    Example:

    \b
        profiler explain data/sample/test/images/0a1b2c3d --model runs/demo/set/model.keras -o sheet.png
    """
    from pathlib import Path

    from core.errors import DataError
    from core.labels import TRAITS
    from data_prep.dataset import discover_users
    from profiler.prediction import Predictor, explain_user, iter_predictions

    users = discover_users([user_dir])
    if len(users) != 1:
        raise click.UsageError(f"{user_dir}: a dataset folder ({len(users)} users); give one user's folder")
    refuse_output_over_inputs(output, {"the model file": model_path, "the embedding cache": store_path,
                                       "one of the user's images": [str(f) for f in users[0].files]})
    predictor = Predictor.load(model_path, store=store_path, decide=decide)
    row = next(iter_predictions(users, predictor))[0]
    if row["error"]:
        raise DataError(f"{user_dir}: {row['error']}; nothing to explain")
    got = predictor.reader.featurize(users, 0)[0]
    evidence = explain_user(predictor, got, {t: row[t] for t in TRAITS})
    for t, e in evidence.items():
        click.echo(f"{t}: {row[t]} (explained: {e['class']}, p = {e['probability']:.3f})")
        for item in e["images"]:
            click.echo(f"  {item['effect']:+.4f}  {item['file']}")
    for item in row["skipped"]:
        click.echo(f"warning: {item['file']}: {item['reason']}; skipped", err=True)
    if output:
        from profiler.plots import explanation_sheet

        explanation_sheet(Path(users[0].files[0]).parent, evidence, output,
                          title=f"{users[0].user_id}: each image's effect on the predicted class "
                                f"({Path(model_path).parent.name}/{Path(model_path).name})")
        click.echo(f"wrote {output}", err=True)
