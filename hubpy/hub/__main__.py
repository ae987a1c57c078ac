"""``python -m hub run path/to/agent --prompt "hi"``: run an agent locally (see hub/_local.py)."""

from __future__ import annotations

import sys

from ._local import main

if __name__ == "__main__":
    sys.exit(main())
