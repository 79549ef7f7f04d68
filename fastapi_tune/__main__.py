"""`python -m fastapi_tune` runs the CLI."""

from fastapi_tune.cli import main

main()
