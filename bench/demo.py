"""Time ``atft demo`` end to end in a fresh ATFT_HOME (``python -m bench demo``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "ATFT_HOME": home}
        for key in ("JQUANTS_API_KEY", "JQUANTS_BASE_URL", "JQUANTS_PLAN", "ATFT_START_DATE"):
            env.pop(key, None)
        atft = Path(sys.executable).with_name("atft")
        start = time.perf_counter()
        code = subprocess.call([str(atft), "demo", *argv], env=env)
        print(f"atft demo: exit {code}, {time.perf_counter() - start:.0f}s wall")
        return code
