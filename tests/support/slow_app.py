"""worker_apps' handlers behind an import that takes a second: a window in which a worker
is started but not yet serving (it writes the file named by SLOW_APP_MARKER first)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.support.worker_apps import registry

Path(os.environ["SLOW_APP_MARKER"]).write_text("importing")
time.sleep(1.0)

__all__ = ["registry"]
