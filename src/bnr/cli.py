"""`bnr` command line: argv -> config -> recipe. Heavy libraries are imported only inside recipes,
so `bnr --help` answers instantly. User errors print one line and exit with code 2."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
import warnings
from dataclasses import dataclass, field

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# OSErrors that are about the user's paths (missing, unreadable, unwritable, full disk), not bugs
_USER_FILE_ERRORS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ENOSPC}


@dataclass(frozen=True)
class Command:
    module: str
    help: str
    aliases: dict[str, str] = field(default_factory=dict)
    default_config: str | None = None
    takes_config: bool = True


_MERGE_ALIASES = {k: f"merge.{k}" for k in ("user", "reinforce", "method", "alpha", "tau", "scale", "full_model")}
_MERGE_ALIASES |= {"out": "merge.out", "allow_base_mismatch": "merge.allow_base_mismatch"}

COMMANDS: dict[str, Command] = {
    "align": Command(
        "bnr.recipes.align",
        "safety-align a base that does not refuse (e.g. SmolLM2) into a full model",
        {"out": "align.out"},
    ),
    "train-buffer": Command(
        "bnr.recipes.train_buffer", "train the BufferLoRA (provider side, once per base model)", {"out": "buffer.out"}
    ),
    "train-reinforce": Command(
        "bnr.recipes.train_reinforce",
        "train the ReinforceLoRA with the buffer merged",
        {"out": "reinforce.out", "buffer": "reinforce.buffer"},
    ),
    "finetune": Command(
        "bnr.recipes.finetune",
        "a user fine-tuning job (defense=bnr | none | ...)",
        {"out": "user.out", "defense": "user.defense", "buffer": "user.buffer", "p": "user.p", "n": "user.n"},
    ),
    "merge": Command(
        "bnr.recipes.merge", "QR-merge ReinforceLoRA into UserLoRA (accepts plain PEFT folders)", _MERGE_ALIASES
    ),
    "pipeline": Command("bnr.recipes.pipeline", "all stages from one config: buffer, reinforce, user, merge"),
    "validate": Command("bnr.recipes.validate", "check a config (and its data files) without loading models"),
    "train-safety": Command(
        "bnr.recipes.train_safety",
        "train the paper's safety LoRA (aligned model, refusals)",
        {"out": "analyze.safety.out"},
    ),
    "analyze grads": Command(
        "bnr.recipes.analyze",
        "Safety Gradient Score and gradient norms per layer (read-only)",
        {"out": "analyze.out", "buffer": "analyze.buffer", "n": "analyze.n", "sign": "analyze.sign"},
    ),
    "eval": Command(
        "bnr.recipes.evaluate",
        "evaluate a run dir, PEFT adapter folder or model under a protocol (HS, HS+, FA, over-refusal)",
        {
            k: f"eval.{k}"
            for k in (
                "target",
                "protocol",
                "out",
                "benchmarks",
                "judges",
                "limit",
                "trigger",
                "template",
                "max_new_tokens",
                "batch_size",
                "cache",
            )
        },
    ),
    "sweep": Command(
        "bnr.recipes.sweep",
        "grid of (defense, p, n, seed) cells: finetune, merge, eval; resumable; tables and plots",
        {
            "out": "sweep.out",
            "protocol": "eval.protocol",
            "defenses": "sweep.defenses",
            "p": "sweep.p",
            "n": "sweep.n",
            "seeds": "sweep.seeds",
            "max_cells": "sweep.max_cells",
            "benchmarks": "eval.benchmarks",
        },
    ),
    "demo": Command(
        "bnr.recipes.demo",
        "the toy world end to end on a CPU: base, buffer, reinforce, SFT vs BnR at p=0.1/0.5, table + plot",
        {"out": "toy.out", "task": "toy.task", "seeds": "toy.seeds", "ps": "toy.ps", "threads": "toy.threads"},
        default_config="toy",
    ),
    "toy build": Command(
        "bnr.recipes.toy_build",
        "train (or find cached) the aligned toy base model; `builtin:toy` resolves to it",
        {"threads": "toy.threads"},
        default_config="toy",
    ),
    "buffers": Command(
        "bnr.recipes.buffers",
        "the provider's buffer registry: bnr buffers list | register PATH (what merge and exports check)",
        takes_config=False,
    ),
    "ls": Command(
        "bnr.recipes.listing",
        "list presets, datasets, templates, merge methods, ... (bnr ls [TOPIC])",
        takes_config=False,
    ),
}


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bnr",
        description="Buffer-and-Reinforce: safe fine-tuning against harmful fine-tuning.",
        epilog="Every command takes --config PRESET|FILE.yaml and key=value overrides (e.g. user.p=0.1).",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        p.add_argument("--config", "-c", default=cmd.default_config, help="built-in preset name or YAML path")
        p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
        if "eval.protocol" in cmd.aliases.values():
            p.add_argument("--protocol", help="evaluation protocol preset (same as protocol=NAME)")
    return parser


def _version() -> str:
    from bnr import __version__

    return f"bnr {__version__}"


def _quiet_library_bars(cfg: object) -> None:
    """`progress: false` anywhere in the config also silences the libraries' loading and saving bars."""
    import dataclasses

    def flags(node: object) -> list[bool]:
        out = []
        for f in dataclasses.fields(node):  # type: ignore[arg-type]
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(value):
                out += flags(value)
            elif f.name == "progress" and isinstance(value, bool):
                out.append(value)
        return out

    if not all(flags(cfg)):
        from huggingface_hub.utils import disable_progress_bars
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        disable_progress_bars()


def _split_command(argv: list[str]) -> list[str]:
    """Join two-word commands (`analyze grads`, `toy build`) into their table key."""
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return [f"{argv[0]} {argv[1]}", *argv[2:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    args_list = _split_command(list(sys.argv[1:] if argv is None else argv))
    parser = _build_parser()
    # overrides may come after options too (`bnr eval target=x --protocol bnr-2026 benchmarks=harmful`)
    args, extra = parser.parse_known_args(args_list)
    if args.command and any(item.startswith("-") or "=" not in item for item in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command:
        args.overrides = [*args.overrides, *extra]
    if not args.command:
        _build_parser().print_help()
        return EXIT_USAGE
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR if noisy == "huggingface_hub" else logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not for users
    from bnr.errors import BnrError

    cmd = COMMANDS[args.command]
    try:
        from bnr.config import load_config

        module = importlib.import_module(cmd.module)
        if not cmd.takes_config:
            module.main(args.overrides)
            return 0
        protocol = [f"eval.protocol={args.protocol}"] if getattr(args, "protocol", None) else []
        cfg = load_config(args.config, args.overrides + protocol, cmd.aliases)
        _quiet_library_bars(cfg)
        module.run(cfg)
    except BnrError as e:
        print(f"bnr: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        if e.errno not in _USER_FILE_ERRORS:
            raise
        where = f" {e.filename!r}" if e.filename else ""
        print(f"bnr: error: cannot access{where}: {e.strerror}; check the path and its permissions", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bnr: interrupted; rerun the same command with resume=true to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
