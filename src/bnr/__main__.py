"""`python -m bnr` is the `bnr` command."""

from __future__ import annotations

import sys

from bnr.cli import main

sys.exit(main())
