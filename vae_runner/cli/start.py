"""`vae-train`'s console script: a Ctrl-C while vae-train starts is one line and exit 130.

Before anything heavy is imported (Hydra, then torch, take seconds), SIGINT is taken over from
Python's default handler (training.signals.interrupt_once): a Ctrl-C is a stop request that
start-up honours at its next safe point (never an exception raised wherever it lands, which
inside torch's import can abort the process), and later ones change nothing. Then cli.train
runs the command. (Only standard modules are imported before: a Ctrl-C in the first few
hundredths of a second, while Python itself starts, is Python's.)
"""

from __future__ import annotations

from vae_runner import heap
from vae_runner.training.signals import interrupted_at_start, take_over_sigint


def entry() -> None:
    take_over_sigint()
    heap.enable()
    from vae_runner.cli.train import entry as run
    from vae_runner.cli.train import interrupted_while_starting

    if interrupted_at_start():  # a Ctrl-C while Hydra and vae-train's modules were imported
        interrupted_while_starting()
    try:
        run()
    finally:
        heap.at_exit()
