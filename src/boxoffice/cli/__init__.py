"""`boxoffice`: one command for people and scripts.

One module per command group (events, sales, users, messaging, dev, worker, serve, loadtest),
wired into one Typer app in app.py; output, ``--json``, exit codes and the mapping of a
``BoxofficeError`` to an exit code live in output.py (the exit codes are listed there).
"""

from boxoffice.cli.app import app, main

__all__ = ["app", "main"]
