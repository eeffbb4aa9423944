"""`bnr serve`, `bnr worker` and `bnr service ...` (organizations, keys, usage, prepare-base).

bnr serve [--config service.yaml] [--store DIR] [--database-url URL] [--host H] [--port P] [--workers N]
          [--executor local|ray]
bnr worker [--config ...] [--store ...] [--database-url ...] [--executor local|ray]
bnr service org create NAME [--max-concurrent-jobs N] | key create ORG | usage | prepare-base BASE
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys

from bnr.errors import BnrError
from bnr.service.settings import ServiceSettings, load_settings

EXIT_USAGE = 2


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="service config YAML (store, database, bases, limits, gates)")
    p.add_argument("--store", help="store directory (overrides the config's `store`)")
    p.add_argument(
        "--database-url",
        help="SQLAlchemy URL; default sqlite:///<store>/service.db; "
        "postgresql://... to scale (also $BNR_DATABASE_URL)",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"bnr {prog}", description=__doc__.split("\n")[0])
    _common(p)
    if prog == "serve":
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=8000)
        p.add_argument("--workers", type=int, default=0, help="start N job workers beside the API")
    if prog in ("serve", "worker"):
        p.add_argument(
            "--executor",
            choices=("local", "ray"),
            default="local",
            help="run each job as a local process (default) or as a Ray task (the `ray` extra; $RAY_ADDRESS names "
            "a cluster, else Ray starts locally)",
        )
    elif prog == "service":
        sub = p.add_subparsers(dest="what", required=True)
        org = sub.add_parser("org").add_subparsers(dest="action", required=True).add_parser("create")
        org.add_argument("name")
        org.add_argument("--max-concurrent-jobs", type=int)
        key = sub.add_parser("key").add_subparsers(dest="action", required=True).add_parser("create")
        key.add_argument("org")
        sub.add_parser("usage")
        prep = sub.add_parser("prepare-base")
        prep.add_argument("base")
    return p


def _settings(args: argparse.Namespace) -> ServiceSettings:
    return load_settings(args.config, store=args.store or "", database_url=args.database_url or "")


def _worker_argv(args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, "-m", "bnr", "worker", "--executor", args.executor]
    for flag, value in (("--config", args.config), ("--store", args.store), ("--database-url", args.database_url)):
        if value:
            argv += [flag, value]
    return argv


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from bnr.service.app import create_app
    from bnr.service.worker import _die_with_parent

    settings = _settings(args)
    app = create_app(settings)
    if args.workers < 0:
        raise BnrError(f"--workers must be >= 0 (got {args.workers})")
    workers = [subprocess.Popen(_worker_argv(args), preexec_fn=_die_with_parent) for _ in range(args.workers)]
    print(
        f"bnr serve: http://{args.host}:{args.port}/v1 (store {settings.store_path}, {args.workers} workers)",
        flush=True,
    )
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        for w in workers:
            w.terminate()


def service(args: argparse.Namespace) -> None:
    from bnr.service import admin

    settings = _settings(args)
    if args.what == "org":
        print(admin.create_org(settings, args.name, args.max_concurrent_jobs))
    elif args.what == "key":
        print(admin.create_key(settings, args.org))
    elif args.what == "usage":
        for row in admin.usage(settings):
            print(json.dumps(row))
    else:
        print(json.dumps(admin.prepare_base(settings, args.base)))


def main(argv: list[str]) -> int:
    """Entry point of the three commands; `argv[0]` is the command."""
    prog, rest = argv[0], argv[1:]
    args = parser(prog).parse_args(rest)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "alembic", "transformers", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if prog == "serve":
            serve(args)
        elif prog == "worker":
            from bnr.service.worker import run_worker

            run_worker(_settings(args), executor=args.executor)
        else:
            service(args)
    except BnrError as e:
        print(f"bnr: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0
