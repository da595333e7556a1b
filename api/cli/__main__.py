"""``python -m api.cli``: the ``tunegraph`` command."""

from api.cli.main import main

main()
