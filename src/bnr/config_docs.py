"""Config keys as `bnr CMD --help` lists them: dotted key, type, default and a one-line help, all derived from the
config dataclasses (their field types, defaults, trailing `# ...` comments and class docstrings), so there is no
second hand-written list to keep in sync."""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import tokenize
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from bnr.config import Config, field_types


@dataclass(frozen=True)
class KeyDoc:
    """One config key: `user.train.lr`, its type, its default as YAML would write it, and its help line."""

    key: str
    type: str
    default: str
    help: str


@cache
def field_comments(cls: type) -> dict[str, str]:
    """{field name: the `# comment` that ends its line in the class body} for a dataclass."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    current: str | None = None  # the field whose logical line (possibly wrapped) is being read
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.string in names and current is None:
            current = tok.string
        elif tok.type == tokenize.COMMENT and current is not None:
            out.setdefault(current, tok.string.lstrip("#").strip())
        elif tok.type == tokenize.NEWLINE:
            current = None
    return out


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(hint))
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return re.sub(r"\bbnr(\.\w+)*\.", "", str(hint)).replace("typing.", "").replace("NoneType", "None")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if value == "" else value
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value)


def key_docs(cls: type = Config, prefix: str = "") -> list[KeyDoc]:
    """Every leaf key under the dataclass `cls` (nested sections flattened to dotted keys), in schema order."""
    hints = field_types(cls)
    comments = field_comments(cls)
    out: list[KeyDoc] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            out += key_docs(hint, key + ".")
        else:
            out.append(KeyDoc(key, _type_name(hint), _show(_default(f)), comments.get(f.name, "")))
    return out


def section_doc(section: str) -> str:
    """First line of the docstring of the dataclass behind a top-level section (`user` -> UserStage)."""
    hint = field_types(Config).get(section)
    doc = inspect.getdoc(hint) if dataclasses.is_dataclass(hint) else None
    return doc.splitlines()[0] if doc else ""


def render_keys(sections: tuple[str, ...], aliases: dict[str, str] | None = None) -> str:
    """The `config keys` block of a command's --help: root keys, then each section's keys with their help."""
    docs = key_docs()
    short = {v: k for k, v in (aliases or {}).items()}
    roots = [d for d in docs if "." not in d.key or d.key.startswith("model.")]
    blocks = [("common", roots)]
    blocks += [(s, [d for d in docs if d.key.startswith(f"{s}.")]) for s in sections]
    lines = ["config keys (key=value on the command line; -c PRESET sets other defaults; `bnr config show`):"]
    for name, items in blocks:
        title = section_doc(name) if name != "common" else "run-wide keys and the base model"
        lines += ["", f"  [{name}] {title}"]
        width = max(len(d.key) for d in items) if items else 0
        for d in items:
            alias = f" (alias {short[d.key]})" if d.key in short else ""
            lines.append(f"    {d.key:<{width}}  {d.type} = {d.default}{alias}" + (f"  - {d.help}" if d.help else ""))
    return "\n".join(lines)
