"""Response cache: completions keyed by (model + adapter hash, prompt-set hash, decoding settings).

Re-judging with another judge, or re-scoring with another rule, then never regenerates. One JSON file per key,
written atomically; a file whose prompts do not match its key (or that is unreadable) is ignored and rewritten.
The batch size is not part of the key: greedy decoding gives the same text in any batch up to numerical noise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from bnr.artifacts import atomic_write_json, hash_bytes, hash_json

log = logging.getLogger(__name__)


def prompts_hash(prompts: list[str]) -> str:
    return hash_bytes("\x1e".join(prompts).encode())[:16]


class ResponseCache:
    """A folder of cached completions."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def key(self, model_key: str, prompts: list[str], decoding: dict[str, Any]) -> str:
        return hash_json({"model": model_key, "prompts": prompts_hash(prompts), "decoding": decoding})

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str, n: int) -> list[str] | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            log.warning("ignoring unreadable cache entry %s", p)
            return None
        completions = data.get("completions")
        if not isinstance(completions, list) or len(completions) != n:
            log.warning("ignoring cache entry %s with %s completions for %d prompts", p, len(completions or []), n)
            return None
        return [str(c) for c in completions]

    def put(self, key: str, prompts: list[str], completions: list[str], decoding: dict[str, Any]) -> None:
        """Store completions under `key` (rank 0 alone writes in a launched job)."""
        from bnr import distributed

        if not distributed.is_main():
            return
        atomic_write_json(
            self.path(key), {"prompts_hash": prompts_hash(prompts), "decoding": decoding, "completions": completions}
        )
