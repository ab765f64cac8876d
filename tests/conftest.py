"""Test-wide set-up: the embedding cache goes to a temporary folder, and the "tiny" encoder exists."""
import pytest

from profiler.encoders import register_encoder
from tests.helpers import TinyEncoder

register_encoder("tiny", TinyEncoder)


@pytest.fixture(autouse=True, scope="session")
def _embedding_cache(tmp_path_factory):
    import os

    os.environ["PROFILER_CACHE_DIR"] = str(tmp_path_factory.mktemp("profiler-cache"))
    yield
