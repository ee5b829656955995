"""`python -m mmrobust ...`: the command line of `mmrobust ...`, for an environment whose scripts
folder is not on PATH (or to pick the interpreter explicitly)."""

from .cli import main

main()
