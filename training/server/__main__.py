"""`python -m training.server`: the on-demand local server (see training.server.run)."""

from training.server.run import main

main()
