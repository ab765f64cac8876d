"""The ``profiler`` command group: the commands are registered here, in one place.

Each command (one module each) parses, calls the library, and prints; what they share
is in ``cli.common``.
"""
from __future__ import annotations

import logging
import os
import sys

# TensorFlow's C++ start-up chatter (CPU features, absent CUDA) is not for our users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click

from cli.embed import embed
from cli.evaluate import demo, evaluate
from cli.explain import explain
from cli.predict import predict
from cli.prepare import prepare
from cli.sample_data import sample_data
from cli.score import score
from cli.train import train
from core import __version__
from core.errors import ProfilerError

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


class Group(click.Group):
    """A click group that turns the library's errors (``ProfilerError``) into clean CLI errors (exit 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ProfilerError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # a write error (disk full, file too large, permissions): no traceback
            where = f"{exc.filename}: " if exc.filename else ""
            reason = exc.strerror or str(exc)
            if (isinstance(exc, FileExistsError) and exc.filename and os.path.exists(exc.filename)
                    and not os.path.isdir(exc.filename)):
                reason = "a file is there, where a folder was to be made"  # mkdir of a path through a file
            raise click.ClickException(f"{where}{reason}") from exc


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


for command in (sample_data, prepare, train, predict, explain, embed, score, evaluate, demo):
    main.add_command(command)
