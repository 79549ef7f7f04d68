"""`python -m fastapi_tune` runs the CLI."""

from fastapi_tune.entry import main

main()
