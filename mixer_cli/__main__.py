"""`python -m mixer_cli` is the `mixer` command."""

from mixer_cli.cli import main

main()
