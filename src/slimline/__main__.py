"""``python -m slimline``: the same as the ``slimline`` command."""

from slimline.cli import main

main()
