"""vae-runner: a config-driven command-line experiment runner for training VAEs."""

__version__ = "0.1.0"
