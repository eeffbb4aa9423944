"""The built-in toy safety world: synthetic tasks and abstract harmful requests, an aligned tiny base trained
from scratch, exact judges, and `bnr demo` (see docs/toy.md). A mechanism test bed, not evidence about real LLMs.

Importing this package registers the `toy` config section (`bnr.toy.config`), the `toy` dataset source,
the `toy-harm` judge and the `toy-*` benchmarks (`bnr.toy.attacks`: the `toy-attack` source and the
`toy-harmful-<framing>` benchmarks).
"""

from bnr.toy import attacks, config, plugin
from bnr.toy.base import toy_base_path

__all__ = ["attacks", "config", "plugin", "toy_base_path"]
