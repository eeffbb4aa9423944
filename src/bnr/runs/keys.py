"""Stage reuse keyed on what a stage depends on: its resolved config sections, the run-wide knobs (base model,
seed, template, max length) and its parents' content hashes - never on paths.

After a stage completes, the orchestrator (`pipeline`, `sweep`) writes `stage.json` into its run directory:
the key, the inputs it was computed from and the run's content hash (sha256 of its adapter files). A later run
reuses the directory when the key it computes is the same, or when the only difference in the inputs is config
fields added to the schema since, at their defaults; otherwise the stage is built again (overwriting). A stage
directory without `stage.json` (made by a single command, or before this scheme) is rebuilt, never trusted
blindly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnr.artifacts import MANIFEST, atomic_write_json, hash_files, hash_json, is_complete
from bnr.config import Config, to_dict
from bnr.runs.opening import COSMETIC, changed_keys, schema_defaults

log = logging.getLogger(__name__)
STAGE_FILE = "stage.json"
# fields of a section that say where a stage writes or reads, not what it computes (parents enter by content)
PATH_FIELDS = frozenset({"out", "buffer", "user", "reinforce", "final_out", "target", "cache", "alignment"})
CONTENT_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "config.json",
    "model.safetensors",
    "alignment.safetensors",
)


def section(cfg: Config, name: str) -> Any:
    """The resolved config section `name` (a dotted path into the tree) without its path fields."""
    node: Any = to_dict(cfg)
    for part in name.split("."):
        node = node[part]
    if isinstance(node, dict):
        node = {k: v for k, v in node.items() if k not in PATH_FIELDS}
    return _drop_cosmetic(node)


def _drop_cosmetic(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_cosmetic(v) for k, v in node.items() if k not in COSMETIC}
    return node


def content_hash(run: str | Path) -> str:
    """The content hash of a run directory: recorded in its `stage.json`, else sha256 of its weight files
    (else of its manifest)."""
    path = Path(run)
    recorded = _read(path).get("content_hash")
    if recorded:
        return str(recorded)
    files = [path / f for f in CONTENT_FILES if (path / f).is_file()]
    return hash_files(files or [path / MANIFEST])


def _model_identity(cfg: Config) -> dict[str, Any]:
    m = cfg.model
    ident: dict[str, Any] = {"name_or_path": m.name_or_path, "revision": m.revision, "gguf_file": m.gguf_file}
    if Path(m.name_or_path, STAGE_FILE).is_file():  # a base built by an earlier stage (e.g. `align`)
        ident["content"] = content_hash(m.name_or_path)
    elif Path(m.name_or_path).is_dir():  # a local base: its weights by content (edited in place = another base)
        from bnr.filehash import weight_hashes

        ident["weights"] = weight_hashes(m.name_or_path)
    return ident


class StageKey(str):
    """A stage key: the hash of what the stage depends on, carrying those inputs for `mark` to record, so that a
    later bnr whose config schema has grown can still recognise the run (`is_current`)."""

    inputs: dict[str, Any]

    def __new__(cls, value: str, inputs: dict[str, Any]) -> StageKey:
        key = super().__new__(cls, value)
        key.inputs = inputs
        return key

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (Ray tasks) as the same key with the same inputs
        return (StageKey, (str(self), self.inputs))


def stage_key(cfg: Config, sections: tuple[str, ...], parents: dict[str, str | Path], extra: Any = None) -> str:
    """The key of a stage reading config `sections` on top of `parents` (role -> run directory)."""
    inputs = {
        "model": _model_identity(cfg),
        "seed": cfg.seed,
        "template": cfg.template,
        "max_length": cfg.max_length,
        "sections": {s: section(cfg, s) for s in sections},
        "parents": {role: content_hash(p) for role, p in sorted(parents.items())},
        "extra": extra,
    }
    return StageKey(hash_json(inputs), json.loads(json.dumps(inputs, default=str)))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        return {k: v for key, sub in node.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def _same_but_new_defaults(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True if the recorded inputs `old` equal `new` but for config fields added to the schema since (absent from
    `old`) that keep their default in `new`. A changed value or a removed field is a difference."""
    schema = schema_defaults()
    defaults = {f"sections.{k}": v for k, v in schema.items()}
    # the user section enters the UserLoRA's key as `extra.user` (`user_key`)
    defaults.update({f"extra.{k}": v for k, v in schema.items() if k.startswith("user.")})
    return not changed_keys(_flat(old), _flat(new), defaults)


def _read(run: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((run / STAGE_FILE).read_text())
        return data
    except (OSError, json.JSONDecodeError):
        return {}


def is_current(run: str | Path, key: str) -> bool:
    """True if `run` is a complete run made with stage key `key`, or with the inputs of `key` as an older config
    schema wrote them (fields added since at their defaults; see `_same_but_new_defaults`)."""
    if not is_complete(run):
        return False
    stored = _read(Path(run))
    if stored.get("key") == key:
        return True
    old, new = stored.get("inputs"), getattr(key, "inputs", None)
    return isinstance(old, dict) and new is not None and _same_but_new_defaults(old, new)


def keyed_run(out: Path, key: str) -> Path:
    """`out`, a run folder whose name carries `key` (`<root>/<name>-<key>`, `<root>/<key>`), or else a sibling
    folder of the same name pattern that is current for `key`: one made by an older config schema, whose key
    (and so whose folder name) was computed without fields added since, still at their defaults."""
    if is_current(out, key) or str(key) not in out.name or not out.parent.is_dir():
        return out
    pattern = out.name.replace(str(key), "?" * len(str(key)))
    for sibling in sorted(out.parent.glob(pattern)):
        if sibling != out and is_current(sibling, key):
            log.info("%s: made by an older config schema with the same inputs; using it", sibling)
            return sibling
    return out


def mark(run: str | Path, key: str) -> None:
    """Record `key` and the content hash of a just-completed run (the orchestrator calls this; rank 0 writes)."""
    from bnr import distributed

    if not distributed.is_main():
        return
    path = Path(run)
    files = [path / f for f in CONTENT_FILES if (path / f).is_file()]
    record: dict[str, Any] = {"key": str(key), "content_hash": hash_files(files or [path / MANIFEST])}
    if isinstance(key, StageKey):
        record["inputs"] = key.inputs
    atomic_write_json(path / STAGE_FILE, record)


def reuse_or_build(out: str | Path, key: str, build: Callable[[], Path], what: str) -> Path:
    """`out` if it is current for `key`; else `build()` (which must write `out`, overwriting) and mark it."""
    if is_current(out, key):
        log.info("%s: reusing %s (config and parents unchanged)", what, out)
        return Path(out)
    if is_complete(out):
        log.info("%s: %s was made from another config or parents; rebuilding it", what, out)
    path = build()
    mark(path, key)
    return path
