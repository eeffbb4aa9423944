"""`bnr` command line: argv -> config -> recipe. Heavy libraries are imported only inside recipes,
so `bnr --help` answers instantly. User errors print one line and exit with code 2."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bnr.config import Config

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a killed writer
# OSErrors that are about the user's paths (missing, unreadable, unwritable, full disk), not bugs
_USER_FILE_ERRORS = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS, errno.ENOSPC}


@dataclass(frozen=True)
class Command:
    module: str
    help: str
    aliases: dict[str, str] = field(default_factory=dict)
    default_config: str | None = None
    takes_config: bool = True
    sections: tuple[str, ...] = ()  # config sections the command reads; their keys are listed in its --help


_MERGE_KEYS = ("user", "reinforce", "method", "alpha", "tau", "scale", "full_model")
_MERGE_ALIASES = {k: f"merge.{k}" for k in (*_MERGE_KEYS, "user_scale", "reinforce_scale", "reinforce_layers")}
_MERGE_ALIASES |= {"out": "merge.out", "allow_base_mismatch": "merge.allow_base_mismatch"}

_ALL_SECTIONS = ("align", "buffer", "reinforce", "user", "merge", "eval", "sweep", "analyze", "toy")

COMMANDS: dict[str, Command] = {
    "align": Command(
        "bnr.recipes.align",
        "safety-align a base that does not refuse (e.g. SmolLM2) into a full model",
        {"out": "align.out"},
        sections=("align",),
    ),
    "train-buffer": Command(
        "bnr.recipes.train_buffer",
        "train the BufferLoRA (provider side, once per base model)",
        {"out": "buffer.out"},
        sections=("buffer",),
    ),
    "train-reinforce": Command(
        "bnr.recipes.train_reinforce",
        "train the ReinforceLoRA with the buffer merged",
        {"out": "reinforce.out", "buffer": "reinforce.buffer"},
        sections=("reinforce",),
    ),
    "finetune": Command(
        "bnr.recipes.finetune",
        "a user fine-tuning job through its defense (defense=NAME, `bnr ls defenses`): train, then finalize",
        {"out": "user.out", "defense": "user.defense", "buffer": "user.buffer", "p": "user.p", "n": "user.n"},
        sections=("user",),
    ),
    "merge": Command(
        "bnr.recipes.merge",
        "QR-merge ReinforceLoRA into UserLoRA (accepts plain PEFT folders)",
        _MERGE_ALIASES,
        sections=("merge",),
    ),
    "pipeline": Command(
        "bnr.recipes.pipeline",
        "all stages from one config: the provider artifacts the defense needs, user, finalize",
        sections=("align", "buffer", "reinforce", "user", "merge"),
    ),
    "validate": Command(
        "bnr.recipes.validate",
        "check a config (and its data files) without loading models",
        sections=("align", "buffer", "reinforce", "user", "merge", "eval"),
    ),
    "config show": Command(
        "bnr.recipes.show",
        "print the resolved config (preset + inherits + overrides) as YAML",
        sections=_ALL_SECTIONS,
    ),
    "calibrate": Command(
        "bnr.recipes.calibrate",
        "search merge strengths, alpha and layers on calibration data; write the chosen merge (provider side)",
        {
            "user": "merge.user",
            "reinforce": "merge.reinforce",
            "out": "merge.out",
            "hs_max": "calibrate.hs_max",
            "fa_delta": "calibrate.fa_delta",
        },
        sections=("merge", "calibrate"),
    ),
    "train-safety": Command(
        "bnr.recipes.train_safety",
        "train the paper's safety LoRA (aligned model, refusals)",
        {"out": "analyze.safety.out"},
        sections=("analyze",),
    ),
    "analyze grads": Command(
        "bnr.recipes.analyze",
        "Safety Gradient Score and gradient norms per layer (read-only)",
        {"out": "analyze.out", "buffer": "analyze.buffer", "n": "analyze.n", "sign": "analyze.sign"},
        sections=("analyze",),
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
        sections=("eval",),
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
            "launcher": "sweep.launcher",
        },
        sections=("sweep", "user", "merge", "eval"),
    ),
    "demo": Command(
        "bnr.recipes.demo",
        "the toy world end to end on a CPU (the toy-demo sweep): SFT vs BnR and its ablations, table + plot",
        {
            "out": "sweep.out",
            "defenses": "sweep.defenses",
            "p": "sweep.p",
            "n": "sweep.n",
            "seeds": "sweep.seeds",
            "max_cells": "sweep.max_cells",
            "threads": "toy.threads",
        },
        default_config="toy-demo",
        sections=("toy", "sweep", "buffer", "reinforce", "user", "merge", "eval"),
    ),
    "toy build": Command(
        "bnr.recipes.toy_build",
        "train (or find cached) the aligned toy base model; `builtin:toy` resolves to it",
        {"threads": "toy.threads"},
        default_config="toy",
        sections=("toy",),
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


INHERITS_HELP = (
    "A YAML config may start with `inherits: PRESET|FILE.yaml` and give only the keys that differ; nested "
    "sections merge key by key (`fields`, `rank_pattern` and `alpha_pattern` are replaced whole)."
)


def _global_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    """--quiet / --progress, accepted before or after the command (`bnr --quiet pipeline`, `bnr pipeline -q`)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--quiet", "-q", action="store_true", default=default, help="warnings and errors only; no progress"
    )
    group.add_argument(
        "--progress",
        action="store_true",
        default=default,
        help="progress bars even outside a terminal (default: bars on a TTY, else one log line every N steps; "
        "TQDM_DISABLE=1 turns bars off)",
    )


def _build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; `command`'s --help also lists its config keys (only that one: --help stays fast)."""
    parser = argparse.ArgumentParser(
        prog="bnr",
        description="Buffer-and-Reinforce: safe fine-tuning against harmful fine-tuning.",
        epilog="Every command takes --config PRESET|FILE.yaml and key=value overrides (e.g. user.p=0.1); "
        "`bnr CMD --help` lists CMD's keys. " + INHERITS_HELP,
    )
    parser.add_argument("--version", action="version", version=_version())
    _global_flags(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        epilog = None
        if name == command and cmd.takes_config:
            from bnr.config_docs import render_keys

            epilog = render_keys(cmd.sections, cmd.aliases) + "\n\n" + INHERITS_HELP
        p = sub.add_parser(
            name,
            help=cmd.help,
            description=cmd.help,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _global_flags(p, argparse.SUPPRESS)
        if cmd.takes_config:
            p.add_argument("--config", "-c", default=cmd.default_config, help="built-in preset name or YAML path")
        p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
        if cmd.takes_config:
            p.add_argument(
                "--nproc",
                type=int,
                default=1,
                metavar="N",
                help="run as N processes on this machine (as torchrun --standalone --nproc_per_node N does)",
            )
            p.add_argument("--fsdp", action="store_true", help="with --nproc: shard the model with FSDP2")
        p.add_argument("overrides", nargs="*", metavar="key=value" if cmd.takes_config else "ARG", help=_arg_help(cmd))
        if "eval.protocol" in cmd.aliases.values():
            p.add_argument("--protocol", help="evaluation protocol preset (same as protocol=NAME)")
    return parser


def _arg_help(cmd: Command) -> str:
    if not cmd.takes_config:
        return "arguments"
    short = ", ".join(f"{k}={v}" for k, v in cmd.aliases.items())
    return "config overrides" + (f"; short forms: {short}" if short else "")


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
    """Join two-word commands (`analyze grads`, `toy build`, `config show`) into their table key."""
    for i in range(len(argv) - 1):
        if argv[i].startswith("-"):
            continue
        if f"{argv[i]} {argv[i + 1]}" in COMMANDS:
            return [*argv[:i], f"{argv[i]} {argv[i + 1]}", *argv[i + 2 :]]
        break
    return argv


def _command_in(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _configure_output(args: argparse.Namespace) -> None:
    """Logging and progress reporting: the CLI is the only place that configures them."""
    from bnr import distributed, progress

    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    if not distributed.is_main():  # launched: rank 0 reports, the other ranks only warn (stderr) and print nothing
        level, args.quiet = max(level, logging.WARNING), True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this process
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR if noisy == "huggingface_hub" else logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not for users
    progress.configure("off" if args.quiet else "bar" if args.progress else "auto")
    if not progress.bars_enabled():
        # the libraries' own bars (downloads, dataset maps, checkpoint shards) follow the same switch
        for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(var, "1")


def main(argv: list[str] | None = None) -> int:
    args_list = _split_command(list(sys.argv[1:] if argv is None else argv))
    parser = _build_parser(_command_in(args_list))
    # overrides may come after options too (`bnr eval target=x --protocol bnr-2026 benchmarks=harmful`)
    args, extra = parser.parse_known_args(args_list)
    if args.command and any(item.startswith("-") or "=" not in item for item in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command:
        args.overrides = [*args.overrides, *extra]
    if not args.command:
        _build_parser().print_help()
        return EXIT_USAGE
    _configure_output(args)
    from bnr import plugins
    from bnr.errors import BnrError

    plugins.load()

    cmd = COMMANDS[args.command]
    try:
        if getattr(args, "nproc", 1) != 1 or getattr(args, "fsdp", False):
            return _launch(cmd, args, args_list)
        return _run(cmd, args)
    except BnrError as e:
        from bnr.runs.writer import discard_unstarted

        discard_unstarted()
        print(f"bnr: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # `bnr ls | head`: the reader left; stop quietly (and keep the interpreter's final flush from failing)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except OSError as e:
        if e.errno not in _USER_FILE_ERRORS:
            raise
        where = f" {e.filename!r}" if e.filename else ""
        print(f"bnr: error: cannot access{where}: {e.strerror}; check the path and its permissions", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bnr: interrupted; rerun the same command with resume=true to continue", file=sys.stderr)
        return EXIT_INTERRUPTED


def _launch(cmd: Command, args: argparse.Namespace, argv: list[str]) -> int:
    """`--nproc N`: check the config once here (a bad knob is one error, not N), then run the command as N
    processes with the launcher flags taken out of its arguments."""
    from bnr import distributed
    from bnr.errors import BnrError

    if args.nproc < 1:
        raise BnrError(f"--nproc must be at least 1 (got {args.nproc}); it is the number of processes to run")
    if args.fsdp and args.nproc < 2:
        raise BnrError("--fsdp shards the model across processes: give --nproc N with N >= 2 beside it")
    if distributed.launched():
        raise BnrError("--nproc is given inside a launched job; give it, or the launcher, not both")
    _config(cmd, args)
    rest, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc=") and item != "--fsdp":
            rest.append(item)
    return distributed.launch(rest, args.nproc, fsdp=args.fsdp)


def _config(cmd: Command, args: argparse.Namespace) -> Config:
    """The command's validated config: its preset or file, the overrides, and --protocol."""
    from bnr.config import load_config

    protocol = [f"eval.protocol={args.protocol}"] if getattr(args, "protocol", None) else []
    return load_config(args.config, args.overrides + protocol, cmd.aliases)


def _run(cmd: Command, args: argparse.Namespace) -> int:
    module = importlib.import_module(cmd.module)
    if not cmd.takes_config:
        module.main(args.overrides)
    else:
        cfg = _config(cmd, args)
        _quiet_library_bars(cfg)
        module.run(cfg)
    sys.stdout.flush()  # a closed pipe shows up here, inside main's handler
    return 0


if __name__ == "__main__":
    sys.exit(main())
