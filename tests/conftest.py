"""Test-wide set-up: the embedding cache goes to a temporary folder, and the "tiny" encoder exists
(in this process and in any it starts, Spark's workers included: ``PROFILER_PLUGINS``)."""
import os

import pytest

os.environ["PROFILER_PLUGINS"] = "tests.plugin"

import profiler.encoders  # noqa: E402  (imports tests.plugin, which registers "tiny")


@pytest.fixture(autouse=True, scope="session")
def _embedding_cache(tmp_path_factory):
    import os

    os.environ["PROFILER_CACHE_DIR"] = str(tmp_path_factory.mktemp("profiler-cache"))
    yield
