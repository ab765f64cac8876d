"""Named in ``PROFILER_PLUGINS`` by ``tests/conftest.py``: registers the "tiny" test encoder in every
process that imports ``profiler.encoders``, Spark's Python workers included."""
from tests.helpers import register

register()
