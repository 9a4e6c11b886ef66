"""Lets `python -m vqgen` work like the `vqgen` command."""

from vqgen.cli import main

if __name__ == "__main__":
    main()
