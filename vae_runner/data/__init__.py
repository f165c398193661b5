"""Data sets as one tensor on the device (images.py); MNIST-style IDX files (idx.py)."""
