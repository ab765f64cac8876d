"""The neutral core that ``data_prep`` and ``profiler`` both build on.

Errors (``core.errors``), atomic file writes (``core.io``), the label vocabularies
(``core.labels``) and the version. It imports nothing from the other packages and
nothing heavy, so every layer can use it.
"""
__version__ = "0.1.0"
