"""Starts the BigQuery emulator (PyPI package bqemulator) for lorch's tests.

Its GEOGRAPHY support loads a DuckDB extension that cannot be downloaded here, so that load is
replaced by a no-op first. Started with a pipe on its standard input (as the tests do), the
emulator exits when that pipe closes, i.e. when the test process that started it is gone,
however that process ended.
"""
import os
import stat
import sys
import threading

from bqemulator.storage import engine

engine.DuckDBEngine._load_spatial = lambda self, *args, **kwargs: None


def exit_with_parent():
    sys.stdin.buffer.read()
    os._exit(0)


if stat.S_ISFIFO(os.fstat(0).st_mode):
    threading.Thread(target=exit_with_parent, daemon=True).start()

from bqemulator import cli  # noqa: E402

sys.argv = ["bqemulator"] + sys.argv[1:]
cli.main()
