"""The ``profiler`` command line: click commands only (parse, call, print)."""
