"""`python -m training.serving`: the on-demand local server (see training.serving.run)."""

from training.serving.run import main

main()
