"""``python -m tripletkit`` (also what ``torchrun -m tripletkit train ...`` runs)."""

import logging
import os
import sys

from tripletkit.cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
    # Under torchrun, gloo's C++ teardown at interpreter exit aborts a rank now and then (SIGABRT,
    # "terminate called without an active exception") after all the work is done and the process
    # group is closed, which turns a finished run into a failed one. Everything the command
    # writes is closed and fsync'ed by now: flush the streams and leave without that teardown.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
