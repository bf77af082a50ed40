"""``python -m seamguard``: the same command line as the ``seamguard`` entry point."""

from seamguard.cli import main

main()
