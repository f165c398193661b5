"""What a run shows: the terminal (console.py, the only rich user), plots, image grids, loggers."""
