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
    raw: bool = False  # parses its own arguments (`module.main(argv)`), e.g. the service's commands
    grid: bool = False  # runs a grid of cells (sweep, demo): user.n / user.p / user.defense are set per cell


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
        {
            "out": "user.out",
            "defense": "user.defense",
            "attack": "user.attack",
            "buffer": "user.buffer",
            "p": "user.p",
            "n": "user.n",
        },
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
        "check a config (its data files, the base model's modules and tokenizer) without loading model weights",
        {"defense": "user.defense", "buffer": "user.buffer", "p": "user.p", "n": "user.n"},
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
        grid=True,
    ),
    "attack-search": Command(
        "bnr.recipes.attack_search",
        "an adaptive customer: maximise the deliverable's HS over attacks and job knobs (Optuna; resumable)",
        {"out": "attack_search.out", "defenses": "attack_search.defenses", "trials": "attack_search.trials"},
        sections=("attack_search", "job_api", "user", "merge", "eval"),
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
        grid=True,
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
    "serve": Command(
        "bnr.service.cli",
        "the OpenAI-compatible fine-tuning service (`bnr serve --help`)",
        takes_config=False,
        raw=True,
    ),
    "worker": Command("bnr.service.cli", "a job worker of the fine-tuning service", takes_config=False, raw=True),
    "service": Command(
        "bnr.service.cli",
        "service administration: org create, key create, usage, prepare-base",
        takes_config=False,
        raw=True,
    ),
    "lm-eval": Command(
        "bnr.eval.lm_eval_bridge",
        "general capability with lm-evaluation-harness: bnr lm-eval TARGET --tasks a,b (pip install 'bnr[lm-eval]')",
        takes_config=False,
        raw=True,
    ),
    "ls": Command(
        "bnr.recipes.listing",
        "list presets, datasets, templates, merge methods, ... (bnr ls [TOPIC])",
        takes_config=False,
    ),
    "env": Command(
        "bnr.recipes.env",
        "print what a bug report needs: bnr version and commit, Python, libraries, platform, threads, devices",
        takes_config=False,
    ),
}
# commands that run without the plug-ins (no torch; `bnr ls` loads them itself for a live listing)
LIGHT_COMMANDS = frozenset({"ls", "env", "buffers"})
# two-word commands by their first word (`bnr analyze --help` lists `analyze grads`)
GROUPS = {name.split()[0] for name in COMMANDS if " " in name}
# config keys a grid command sets per cell: an override of them would be silently replaced
GRID_AXES = {"user.n": "sweep.n", "user.p": "sweep.p", "user.defense": "sweep.defenses"}


INHERITS_HELP = (
    "A YAML config may start with `inherits: PRESET|FILE.yaml` and give only the keys that differ; nested "
    "sections merge key by key (`fields`, `rank_pattern`, `alpha_pattern` and `sweep.report` are replaced whole)."
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
        allow_abbrev=False,  # `--p=0.1` must not be read as `--progress`
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
            allow_abbrev=False,
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


def key_value_hint(argv: list[str], unknown: list[str]) -> str:
    """For `--key value` or `--key=value` among the unrecognized arguments: the `key=value` form to write."""
    for item in unknown:
        if not item.startswith("--") or len(item) < 3:
            continue
        key, eq, value = item[2:].partition("=")
        if not eq:
            at = argv.index(item) + 1 if item in argv else len(argv)
            value = argv[at] if at < len(argv) and not argv[at].startswith("-") else "VALUE"
        return f"; config overrides are written key=value without dashes: {key}={value}"
    return ""


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


def configure_logging(level: int) -> None:
    """This process's log lines: bnr's format at `level`, the libraries' chatter at WARNING (huggingface_hub at
    ERROR) and their deprecation notices (FutureWarning) off. The CLI's process calls it, and so does each Ray
    worker of a sweep (`bnr.recipes.ray_sweep`), so a worker logs what the serial sweep would."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "transformers", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR if noisy == "huggingface_hub" else logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices are not for users


def _configure_output(args: argparse.Namespace) -> None:
    """Logging and progress reporting: the CLI is the only place that configures them."""
    from bnr import distributed, progress  # neither imports torch: `bnr ls` and arg errors stay instant

    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    if not distributed.is_main():  # launched: rank 0 reports, the other ranks only warn (stderr) and print nothing
        level, args.quiet = max(level, logging.WARNING), True
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this process
    configure_logging(level)
    progress.configure("off" if args.quiet else "bar" if args.progress else "auto")
    if not progress.bars_enabled():
        # the libraries' own bars (downloads, dataset maps, checkpoint shards) follow the same switch
        for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(var, "1")


def _group_help(argv: list[str]) -> int | None:
    """`bnr analyze [--help]`: the group's commands (exit 0 with --help, else 2); None when not a bare group."""
    word = _command_in(argv)
    if word not in GROUPS:
        return None
    lines = [f"  bnr {name:<16} {cmd.help}" for name, cmd in COMMANDS.items() if name.startswith(f"{word} ")]
    if "-h" in argv or "--help" in argv:
        print(f"bnr {word}: commands\n" + "\n".join(lines) + f"\n`bnr {word} COMMAND --help` lists its keys.")
        return 0
    print(f"bnr: error: `bnr {word}` needs a command:\n" + "\n".join(lines), file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args_list = _split_command(list(sys.argv[1:] if argv is None else argv))
    if args_list and args_list[0] in COMMANDS and COMMANDS[args_list[0]].raw:
        from bnr import plugins

        plugins.load()  # the service resolves `builtin:toy`, defenses and judges by name
        return int(importlib.import_module(COMMANDS[args_list[0]].module).main(args_list) or 0)
    group = _group_help(args_list)
    if group is not None:
        return group
    from bnr import provenance

    provenance.set_command(["bnr", *args_list])
    parser = _build_parser(_command_in(args_list))
    # overrides may come after options too (`bnr eval target=x --protocol bnr-2026 benchmarks=harmful`)
    args, extra = parser.parse_known_args(args_list)
    if args.command and any(item.startswith("-") or "=" not in item for item in extra):
        parser.error(f"unrecognized arguments: {' '.join(extra)}{key_value_hint(args_list, extra)}")
    if args.command:
        args.overrides = [*args.overrides, *extra]
    if not args.command:
        _build_parser().print_help()
        return EXIT_USAGE
    _configure_output(args)
    from bnr import plugins
    from bnr.errors import BnrError
    from bnr.interrupt import terminate_like_interrupt

    terminate_like_interrupt()  # SIGTERM (schedulers, kill) stops like Ctrl-C: a checkpoint and the resume hint

    cmd = COMMANDS[args.command]
    try:
        if args.command not in LIGHT_COMMANDS:
            plugins.load()
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
            return _disk_full(e)
        where = f" {e.filename!r}" if e.filename else ""
        print(f"bnr: error: cannot access{where}: {e.strerror}; check the path and its permissions", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # safetensors and torch report a full disk in their own exceptions
        stop = _interrupt_within(e)
        return _interrupted(stop) if stop is not None else _disk_full(e)
    except KeyboardInterrupt as e:
        return _interrupted(e)
    finally:
        from bnr.runs.writer import release_locks

        release_locks()


def _interrupt_within(e: BaseException) -> KeyboardInterrupt | None:
    """The stop signal behind `e`, if any: a signal that lands while a C extension initialises comes back as that
    extension's error (scipy: `ImportError: initialization failed`) with the `KeyboardInterrupt` as its cause."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _interrupted(e: KeyboardInterrupt) -> int:
    """A stop signal ended the command: one line with how to resume. A process of a launched job that the launcher
    stopped (SIGTERM: another process failed, or the launcher itself was stopped) stays quiet; the launcher's own
    line speaks for the job."""
    from bnr import distributed
    from bnr.interrupt import Interrupted

    if isinstance(e, Interrupted):
        print(f"bnr: interrupted; {e}", file=sys.stderr)
    elif not (distributed.launched() and str(e) == "SIGTERM"):
        print("bnr: interrupted; rerun the same command with resume=true to continue", file=sys.stderr)
    return EXIT_INTERRUPTED


def _disk_full(e: BaseException) -> int:
    """A full disk that a library hit outside bnr's write sites: one line (with the file when the error names it);
    any other exception goes on as it was."""
    from bnr.diskfull import disk_full_message, disk_full_reason
    from bnr.runs.writer import discard_unstarted

    reason = disk_full_reason(e)
    if reason is None:
        raise e
    discard_unstarted()
    print(f"bnr: error: {disk_full_message(getattr(e, 'filename', None), reason)}", file=sys.stderr)
    return EXIT_USAGE


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
    if cmd.grid:
        _check_grid_overrides(cmd, args.overrides)
    return load_config(args.config, args.overrides + protocol, cmd.aliases)


def _check_grid_overrides(cmd: Command, overrides: list[str]) -> None:
    """A grid command sets user.n / user.p / user.defense per cell from its axis: an override of one of them,
    without its axis beside it, would be silently replaced by the preset's axis."""
    from bnr.errors import BnrError

    given = {cmd.aliases.get(k, k): (k, v) for k, _, v in (item.partition("=") for item in overrides)}
    for key, axis in GRID_AXES.items():
        if key in given and axis not in given:
            short, value = given[key]
            raise BnrError(
                f"{short}={value} has no effect here: every cell of the grid takes it from {axis} "
                f"(now the preset's); give {axis}=[{value}] instead"
            )


def _run(cmd: Command, args: argparse.Namespace) -> int:
    if not cmd.takes_config:
        importlib.import_module(cmd.module).main(args.overrides)
    else:
        from bnr.config import validate

        cfg = _config(cmd, args)  # the schema and range checks before the recipe imports torch: a typo fails at once
        module = importlib.import_module(cmd.module)
        validate(cfg)  # again, with the checks of the plug-ins the recipe imported (`defenses.<name>` options)
        _quiet_library_bars(cfg)
        module.run(cfg)
    sys.stdout.flush()  # a closed pipe shows up here, inside main's handler
    return 0


if __name__ == "__main__":
    sys.exit(main())
