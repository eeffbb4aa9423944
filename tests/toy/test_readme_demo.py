"""The README's demo table is what `bnr demo` writes on this stack (the lock, requirements.lock), bit for bit, on
the kind of CPU that recorded it (float kernels differ between CPUs; the README says which machine).

Slow: the demo takes about 6 minutes on 2 idle cores. The comparison uses the digests the performance suite
computes (benchmarks/p4_jobs.py: `results.json`'s numbers and `table.md`, both without wall times).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from bnr.cli import main

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(
    r"<!-- bnr demo: begin; results_digest (?P<digest>[^ ]+) -->\n(?P<table>.*?)\n<!-- bnr demo: end -->", re.S
)


def _p4() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))  # p4_jobs imports its siblings
    spec = importlib.util.spec_from_file_location("p4_jobs", ROOT / "benchmarks" / "p4_jobs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def readme_demo() -> tuple[str, str]:
    """(the table, the results digest) the README records for `bnr demo`."""
    found = BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found, "README.md has no `<!-- bnr demo: begin ... -->` block"
    return found["table"].strip(), found["digest"]


@pytest.mark.slow
def test_readme_demo_table_is_what_bnr_demo_writes(tmp_path: Path) -> None:
    table, digest = readme_demo()
    assert digest != "NOT-RECORDED", (
        "record the demo: bnr demo out=runs/demo && python scripts/readme_demo.py runs/demo"
    )
    assert main(["demo", f"out={tmp_path}"]) == 0
    p4 = _p4()
    assert p4._table_without_timings((tmp_path / "table.md").read_text()).strip() == table
    assert p4.demo_digests(tmp_path)["results_digest"] == digest
