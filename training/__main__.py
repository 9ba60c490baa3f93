"""`python -m training run ...`: the same as the `closedloop` console script (see training/cli.py)."""
import sys

from training.cli import main

sys.exit(main())
