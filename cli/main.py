"""The ``profiler`` command group; each command parses, calls the library, and prints."""
from __future__ import annotations

import logging
import os
import sys

# TensorFlow's C++ start-up chatter (CPU features, absent CUDA) is not for our users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click

from core.errors import ProfilerError
from profiler import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


class Group(click.Group):
    """A click group that turns the library's errors (``ProfilerError``) into clean CLI errors (exit 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ProfilerError as exc:
            raise click.ClickException(str(exc)) from exc


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


class _StderrHandler(logging.Handler):
    """Log records to stderr through tqdm, so they do not break a progress bar."""

    def emit(self, record):
        from tqdm.auto import tqdm

        tqdm.write(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def setup_logging(verbose: int) -> None:
    logger = logging.getLogger("profiler")
    logger.handlers[:] = [_StderrHandler()]
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="profiler")
@click.option("-v", "--verbose", count=True, help="More messages on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Profile social-media users (gender, location, occupation) from the images they post.

    The default model embeds each image once with a frozen pretrained encoder and
    reads a user's images as a set; the paper's two 3D CNNs over a volume of 11
    stacked images (Valdez-Rodriguez et al., MEX-A3T 2019) are there too. Results go
    to stdout or --output; progress and warnings go to stderr.
    """
    setup_logging(verbose)


# The commands register themselves on ``main``.
from cli import evaluate as _evaluate  # noqa: E402,F401
from cli import predict as _predict  # noqa: E402,F401
from cli import prepare as _prepare  # noqa: E402,F401
from cli import sample_data as _sample_data  # noqa: E402,F401
from cli import train as _train  # noqa: E402,F401
from cli import score as _score  # noqa: E402,F401
