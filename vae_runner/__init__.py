"""vae-runner: a config-driven command-line experiment runner for training VAEs."""

__version__ = "0.2.0"
