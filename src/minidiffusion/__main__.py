"""``python -m minidiffusion`` (and ``torchrun -m minidiffusion``) run the command line."""

import logging
import os
import sys

from .cli import main
from .cli.launch import is_worker

code = main()
if is_worker():
    # A `train --workers` rank leaves without the interpreter's teardown: after a finished run, the C++ runtime's
    # exit-time destructors of the process group's threads sometimes aborted it ("terminate called without an
    # active exception", SIGABRT), which turned a good run's exit status into a failure. Everything it wrote is
    # already closed (checkpoints are written atomically); only the log and the standard streams need flushing.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))
sys.exit(code)
