"""`python -m overparam` runs the CLI, which is what `torchrun -m overparam train` needs."""

import sys

from overparam.cli import main

sys.exit(main())
