"""`python -m boxoffice.cli`: the same as the `boxoffice` console script."""

from boxoffice.cli.app import main

main()
