"""``python -m tripletkit`` (also what ``torchrun -m tripletkit train ...`` runs)."""

import sys

from tripletkit.cli import main

sys.exit(main())
