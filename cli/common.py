"""What the commands share: option decorators, the "did you mean" choice, output helpers.

Commands import from here, never from ``cli.main``, so the command group can import the
commands without a cycle. Option meanings are the same in every command: ``-o/--output``
is a file; ``--out-dir`` a folder of results; ``--run-dir`` a training run's folder.
"""
from __future__ import annotations

import click


class Choice(click.Choice):
    """``click.Choice`` that suggests the closest value for a typo ("did you mean")."""

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            from core.labels import suggest

            close = suggest(str(value), list(self.choices))
            if close:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {close[0]!r}?"
            raise


class FloatRange(click.FloatRange):
    """``click.FloatRange`` that refuses nan, which passes every comparison with its bounds."""

    def convert(self, value, param, ctx):
        out = super().convert(value, param, ctx)
        if out != out:
            self.fail(f"{value!r} is not a number.", param, ctx)
        return out


#: a seed numpy's generators take: 0 to 2^32 - 1
SEED = click.IntRange(0, 2**32 - 1)


def workers_option(what: str = "Decoding processes", default: str = "the usable cores"):
    """``--workers/-j``: how many processes do ``what``."""
    return click.option("--workers", "-j", type=click.IntRange(1, 256), default=None,
                        help=f"{what}  [default: {default}]")


def quiet_option(what: str = "No progress bar."):
    """``--quiet/-q``: no progress output."""
    return click.option("--quiet", "-q", is_flag=True, help=what)


def dash_is_stdout(ctx, param, value):
    """An ``--output`` of ``-`` means standard output, as it does for most command-line tools."""
    return None if value == "-" else value


def output_option(what: str):
    """``--output/-o``: a result file, written atomically (stdout when not given or ``-``)."""
    return click.option("--output", "-o", type=click.Path(dir_okay=False), default=None, help=what,
                        callback=dash_is_stdout)


def out_dir_option(what: str, **kwargs):
    """``--out-dir``: a folder of results."""
    kwargs.setdefault("default", None)
    return click.option("--out-dir", "out_dir", type=click.Path(file_okay=False), help=what, **kwargs)


def embeddings_option():
    """``--embeddings``: the set model's embedding cache file."""
    from pathlib import Path

    return click.option("--embeddings", "store_path", type=click.Path(dir_okay=False, path_type=Path),
                        default=None,
                        help="The set model's embedding cache file  [default: "
                             "$PROFILER_CACHE_DIR/embeddings.sqlite, or ~/.cache/profiler/embeddings.sqlite]")


def spark_master(ctx, param, value):
    """``--master`` in one of the forms Spark takes (``yarn``, ``local``, ``local[...]``,
    ``local-cluster[...]``, ``spark://...``, ``k8s://...``): any other form Spark answers with
    a Java stack trace."""
    import re

    if value is not None and not re.fullmatch(r"yarn|local(-cluster)?(\[[0-9*, ]+\])?|(spark|k8s)://\S+", value):
        raise click.BadParameter(f"{value[:100]!r} is not a Spark master: yarn, local, local[N] or local[*], "
                                 "spark://HOST:PORT or k8s://URL")
    return value


def spark_options(what: str):
    """``--engine``, ``--master``, ``--partitions``: run the job on this machine or on Spark."""
    def decorate(function):
        for option in reversed((
            click.option("--engine", type=Choice(["local", "spark"]), default="local",
                         help=f"{what} in this process ('local') or on Apache Spark ('spark': pip install "
                              "'profiler[spark]'; needs Java 17+)."),
            click.option("--master", default="local[*]", callback=spark_master,
                         help="With --engine spark: the Spark master. local[*] uses this machine's cores "
                              "(local[2]: two); spark://HOST:7077, yarn or k8s://... a cluster."),
            click.option("--partitions", type=click.IntRange(1, 10_000_000), default=None,
                         help="With --engine spark: slices of the user list  [default: two per core, "
                              "at most 2,000 users each]"),
        )):
            function = option(function)
        return function
    return decorate


def refuse_output_over_inputs(output, inputs: dict) -> None:
    """A usage error when ``output`` is one of the files the command reads (``inputs``: what
    it is -> a path or a list of paths: the model file, a submission, the embedding cache...):
    writing it would lose that input."""
    import os

    if not output:
        return
    for what, paths in inputs.items():
        for path in paths if isinstance(paths, (list, tuple)) else [paths]:
            if path and (os.path.realpath(output) == os.path.realpath(path) or (
                    os.path.exists(output) and os.path.exists(path) and os.path.samefile(output, path))):
                raise click.UsageError(f"--output {output} is {what}, which this command reads; choose "
                                       "another file")


def echo_problems(problems) -> None:
    """Print problems (file:line: severity: message) to stderr."""
    for problem in problems:
        click.echo(str(problem), err=True)


def write_output(text: str, output: str | None) -> None:
    """Write a result to ``output`` atomically, or to stdout."""
    if output:
        from core.io import atomic_write_text

        atomic_write_text(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
