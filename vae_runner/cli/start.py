"""`vae-train`'s console script: a Ctrl-C while vae-train starts is one line and exit 130.

Before anything heavy is imported (Hydra, then torch, take seconds), SIGINT is taken over from
Python's default handler (training.signals.interrupt_once): a Ctrl-C is a stop request that
start-up honours at its next safe point (never an exception raised wherever it lands, which
inside torch's import can abort the process), and later ones change nothing. Then cli.train
runs the command. (Only standard modules are imported before: a Ctrl-C in the first few
hundredths of a second, while Python itself starts, is Python's.)
"""

from __future__ import annotations

import os
import sys

from vae_runner.exit_codes import ExitCode
from vae_runner.training.signals import interrupted_at_start, take_over_sigint

LINE = "interrupted while starting; nothing was run"


def entry() -> None:
    take_over_sigint()
    from vae_runner.cli.train import entry as run

    if interrupted_at_start():  # a Ctrl-C while Hydra and vae-train's modules were imported
        interrupted_while_starting()
    run()


def interrupted_while_starting() -> None:
    """The one line, then exit 130 at once, without the interpreter's exit hooks: a Ctrl-C
    during `import torch` leaves torch half-imported, and its exit hooks then print (its
    FakeTensor cache statistics, through the INFO handler Hydra set, since torch's own logging
    set-up never ran). Nothing of vae-train's needs them before a run began: no file is being
    written, the checks' claims are released, and a lock ends with its process."""
    from vae_runner.report.console import print_error

    print_error(LINE)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(ExitCode.INTERRUPTED))
