"""training: everything that runs, measures and records the closed loop. `python -m training --help`."""
