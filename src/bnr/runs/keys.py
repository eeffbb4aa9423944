"""Stage keys: what a stage depends on - its resolved config sections, the run-wide knobs (base model, seed,
template, max length), its parents' content hashes and its extras (a defense and its resolved options) - never
paths.

Every command that makes a stage run opens it with its key (`open_run(..., key=...)`, or `keyed(out, key)` around
code that opens it), and the run writer records the key, its inputs and the run's content hash in the run's
`manifest.json`, inside the same atomic rename as the run itself. A later command reuses the directory when the
key it computes is the same, or when the only difference in the inputs is config fields added to the schema
since, at their defaults; otherwise the stage is built again (overwriting). A checkpointed run resumes only when
the key recorded in its partial manifest matches (`check_resumable`).

Read-compat: a run written before the key moved into the manifest recorded it in `stage.json` beside it; that
record is still read. A run without any key (made by a command of that older bnr) is rebuilt, never trusted
blindly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnr.artifacts import MANIFEST, atomic_write_json, content_hash, hash_json, is_complete
from bnr.config import Config, to_dict
from bnr.errors import BnrError
from bnr.locations import without_locations
from bnr.runs.writer import RunWriter, keyed

__all__ = [
    "COSMETIC",
    "StageKey",
    "check_resumable",
    "content_hash",
    "is_current",
    "keyed",
    "keyed_run",
    "recorded_key",
    "reuse_or_build",
    "section",
    "stage_key",
    "without_paths",
]

log = logging.getLogger(__name__)
LEGACY_STAGE_FILE = "stage.json"  # where bnr recorded the key before it moved into the manifest (read only)
LEGACY_DEPENDS_FILE = "depends.json"  # the resume guard's record before it moved into the partial manifest
# config leaves that change what is shown, not what is computed
COSMETIC = frozenset({"progress", "log_every"})
# config leaves a checkpoint does not depend on (how often it saves): a resume may change them
_RESUMABLE_CHANGES = frozenset({"save_every"})


def section(cfg: Config, name: str) -> Any:
    """The resolved config section `name` (a dotted path into the tree) as a stage key holds it."""
    node: Any = cfg
    for part in name.split("."):
        node = getattr(node, part)
    return without_paths(node)


def without_paths(node: Any) -> Any:
    """A config value as a stage key holds it: without the fields its schema marks as where a stage writes or
    reads by path (`bnr.locations`: a parent enters by content hash instead), and without cosmetic leaves."""
    return _drop_cosmetic(without_locations(node))


def _drop_cosmetic(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _drop_cosmetic(v) for k, v in node.items() if k not in COSMETIC}
    return node


def recorded_key(run: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """(key, its inputs) recorded for a run directory or its partial folder: from its manifest, else (a run
    written by an older bnr) from `stage.json` beside it; (None, None) if neither records one."""
    path = Path(run)
    for name, key_field, inputs_field in ((MANIFEST, "key", "key_inputs"), (LEGACY_STAGE_FILE, "key", "inputs")):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get(key_field), str):
            inputs = data.get(inputs_field)
            return data[key_field], inputs if isinstance(inputs, dict) else None
    return None, None


def _model_identity(cfg: Config) -> dict[str, Any]:
    m = cfg.model
    ident: dict[str, Any] = {"name_or_path": m.name_or_path, "revision": m.revision, "gguf_file": m.gguf_file}
    if recorded_key(m.name_or_path)[0] is not None:  # a base built by an earlier stage (e.g. `align`)
        ident["content"] = content_hash(m.name_or_path)
    elif Path(m.name_or_path).is_dir():  # a local base: its weights by content (edited in place = another base)
        from bnr.filehash import weight_hashes

        ident["weights"] = weight_hashes(m.name_or_path)
    return ident


class StageKey(str):
    """A stage key: the hash of what the stage depends on, carrying those inputs for the manifest to record, so
    that a later bnr whose config schema has grown can still recognise the run (`is_current`)."""

    inputs: dict[str, Any]

    def __new__(cls, value: str, inputs: dict[str, Any]) -> StageKey:
        key = super().__new__(cls, value)
        key.inputs = inputs
        return key

    def __reduce__(self) -> tuple[Any, ...]:  # pickled (Ray tasks) as the same key with the same inputs
        return (StageKey, (str(self), self.inputs))


def stage_key(cfg: Config, sections: tuple[str, ...], parents: dict[str, str | Path], extra: Any = None) -> StageKey:
    """The key of a stage reading config `sections` on top of `parents` (role -> run directory)."""
    inputs = {
        "model": _model_identity(cfg),
        "seed": cfg.seed,
        "template": cfg.template,
        "max_length": cfg.max_length,
        "sections": {s: section(cfg, s) for s in sections},
        # a parent that is not there (a provider stage built without its optional parent) enters as None
        "parents": {role: content_hash(p) if Path(p).is_dir() else None for role, p in sorted(parents.items())},
        "extra": extra,
    }
    return StageKey(hash_json(inputs), json.loads(json.dumps(inputs, default=str)))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and node:
        return {k: v for key, sub in node.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): node}


def _schema_defaults() -> dict[str, Any]:
    """Every config leaf's default value, flattened (JSON-normalised)."""
    return _flat(json.loads(json.dumps(to_dict(Config()), default=str)))


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The flattened keys whose values differ between two recorded key inputs, sorted, but for config fields added
    to the schema since `old` was written (absent from it) that keep their default in `new`."""
    schema = _schema_defaults()
    defaults = {f"sections.{k}": v for k, v in schema.items()}
    # the user section enters the UserLoRA's key as `extra.user` (`user_key`)
    defaults.update({f"extra.{k}": v for k, v in schema.items() if k.startswith("user.")})
    flat_old, flat_new, missing = _flat(old), _flat(new), object()
    return sorted(
        k
        for k in set(flat_old) | set(flat_new)
        if flat_old.get(k, missing) != flat_new.get(k, missing)
        and not (k not in flat_old and k in defaults and flat_new[k] == defaults[k])
    )


def is_current(run: str | Path, key: str) -> bool:
    """True if `run` is a complete run made with stage key `key`, or with the inputs of `key` as an older config
    schema wrote them (fields added since at their defaults; see `input_changes`)."""
    if not is_complete(run):
        return False
    stored, old = recorded_key(run)
    if stored == key:
        return True
    new = getattr(key, "inputs", None)
    return old is not None and new is not None and not input_changes(old, new)


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


def reuse_or_build(out: str | Path, key: str, build: Callable[[], Path], what: str) -> Path:
    """`out` if it is current for `key`; else `build()`, which must write `out` (overwriting): the run it opens
    there records `key` in its manifest."""
    if is_current(out, key):
        log.info("%s: reusing %s (config and parents unchanged)", what, out)
        return Path(out)
    if is_complete(out):
        log.info("%s: %s was made from another config or parents; rebuilding it", what, out)
    with keyed(out, key):
        return build()


def _shown(key: str) -> str:
    """A flattened key input as the config key it came from (`sections.buffer.train.lr` -> `buffer.train.lr`)."""
    for prefix in ("sections.", "extra."):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def check_resumable(writer: RunWriter) -> None:
    """Refuse to resume a checkpoint made with another stage key; record the key in the partial manifest (a run
    opened without a key - one that does not train - resumes nothing and is not checked)."""
    if writer.key is None:
        return
    if writer.checkpoint_dir.is_dir() and any(writer.checkpoint_dir.iterdir()):
        old_key, old_inputs = recorded_key(writer.partial)
        if old_key is None:
            older = " (it was written by an older bnr)" if (writer.partial / LEGACY_DEPENDS_FILE).is_file() else ""
            raise BnrError(
                f"cannot resume {str(writer.out)!r}: its checkpoint does not record the stage key it was trained "
                f"with{older}; rerun without resume=true to start over"
            )
        new_inputs = getattr(writer.key, "inputs", None)
        if old_key != writer.key:
            diff = input_changes(old_inputs or {}, new_inputs or {}) if old_inputs and new_inputs else ["the key"]
            diff = [k for k in diff if k.rsplit(".", 1)[-1] not in _RESUMABLE_CHANGES]
            if diff:
                flat_old, flat_new = _flat(old_inputs or {}), _flat(new_inputs or {})
                shown = ", ".join(
                    f"{_shown(k)} ({flat_old.get(k, '<unset>')!r} -> {flat_new.get(k, '<unset>')!r})" for k in diff[:6]
                )
                more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
                raise BnrError(
                    f"cannot resume {str(writer.out)!r}: the checkpoint was trained with another config or parents: "
                    f"{shown}{more}; rerun with the same config, or without resume=true to start over"
                )
    if writer.main:
        record = {"stage": writer.stage, "status": "partial", "key": str(writer.key)}
        atomic_write_json(writer.partial / MANIFEST, {**record, "key_inputs": getattr(writer.key, "inputs", None)})
