"""fastapi-tune: measure a FastAPI app, then size its deployment from the evidence."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # __version__ is looked up on first use: importlib.metadata takes ~70 ms to import, and the
    # console script must install its signal handlers (fastapi_tune.entry) before anything slow,
    # so that an early Ctrl-C ends with one line, never a traceback.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415 - see above

    try:
        found = version("fastapi-tune")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
