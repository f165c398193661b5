"""Training: build, model, losses, annealing, the loop, metrics, checkpoints, resume, history."""
