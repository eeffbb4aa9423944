"""`bnr buffers list | register PATH...`: the provider's buffer registry (what the buffer guard compares with).

`bnr train-buffer` registers every buffer it trains; `register` adds buffers trained before the registry
existed, or elsewhere. The registry lives at $BNR_BUFFER_REGISTRY (default ~/.cache/bnr/buffers); merge and every
export refuse to run while it is empty, missing or damaged (unless guard.no_buffer_registered=true), so machines that
train buffers and machines that export share one folder (docs/reliability.md, "The guard fails closed").
"""

from __future__ import annotations

from bnr.errors import BnrError

USAGE = "usage: bnr buffers list | bnr buffers register PATH [PATH ...]"


def main(argv: list[str]) -> None:
    from bnr import guard

    if not argv or argv[0] not in ("list", "register"):
        raise BnrError(f"unknown buffers action {' '.join(argv)!r}; {USAGE}")
    if argv[0] == "register":
        if len(argv) < 2:
            raise BnrError(f"buffers register needs at least one buffer folder; {USAGE}")
        for path in argv[1:]:
            print(f"registered {guard.register(path)}  {path}")
        return
    if len(argv) > 1:
        raise BnrError(f"buffers list takes no argument; {USAGE}")
    rows = guard.entries()
    print(f"buffer registry: {guard.registry_dir()} ({len(rows)} buffer{'s' if len(rows) != 1 else ''})")
    for e in rows:
        print(f"  {e['key']}  {e.get('modules', '?'):>4} modules  {e.get('registered', '')}  {e.get('source', '')}")
