"""Entry points: vae-train (train.py), vae-summary (summary.py), vae-plot (plot.py)."""
