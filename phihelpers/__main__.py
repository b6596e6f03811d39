import sys
import time

STARTED = time.monotonic()  # for the start-up line a server logs (server/bootstrap.py)

from .cli import main  # noqa: E402

sys.exit(main(started=STARTED))
