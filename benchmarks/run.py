"""Run every benchmark in this folder (``bench_*.py``) in one go; each prints JSON lines.

Usage: ``make bench`` or ``python benchmarks/run.py [name-filter]``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).parent
    pick = sys.argv[1] if len(sys.argv) > 1 else ""
    rc = 0
    for script in sorted(here.glob("bench_*.py")):
        if pick in script.stem:
            rc |= subprocess.call([sys.executable, str(script)])
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
