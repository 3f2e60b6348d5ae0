"""``python -m minidiffusion`` (and ``torchrun -m minidiffusion``) run the command line."""

import sys

from .cli import main

sys.exit(main())
