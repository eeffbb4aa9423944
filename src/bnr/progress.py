"""Progress reporting for the training loop, the generation loop and sweeps: a bar in a terminal, one log line
every N steps elsewhere.

In a terminal (stderr is a TTY) a tqdm bar is drawn; in a file, a CI log or a pipe the bar's carriage-return
updates would pile up into one huge line, so instead one `logging` line is written every `every` steps (and at
the end) with the step, the latest metrics (loss, lr, ...), the rate and the ETA. The one global switch is
`configure(mode)`, which only the CLI calls (`bnr --progress`, `bnr --quiet`); `TQDM_DISABLE` is respected in
`auto` mode. Library code only creates `Progress` objects.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

ProgressMode = Literal["auto", "bar", "log", "off"]
MODES: tuple[ProgressMode, ...] = ("auto", "bar", "log", "off")

T = TypeVar("T")
log = logging.getLogger(__name__)
_mode: ProgressMode = "auto"


def configure(mode: ProgressMode) -> None:
    """Set how every `Progress` reports: `auto` (bar on a TTY, log lines otherwise), `bar`, `log` or `off`."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"progress mode must be one of {MODES} (got {mode!r})")
    _mode = mode


def current_mode() -> ProgressMode:
    return _mode


def _env_disabled() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def bars_enabled() -> bool:
    """True when progress is drawn as a bar: forced by `bar`, or `auto` on a terminal without TQDM_DISABLE."""
    if _mode == "bar":
        return True
    if _mode != "auto" or _env_disabled():
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def format_duration(seconds: float) -> str:
    """`1:02:03` / `2:03` style, as tqdm writes it."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.2e}" if key == "lr" or (value != 0 and abs(value) < 1e-3) else f"{value:.4g}"
    else:
        text = str(value)
    return f"{key} {text}"


def _rate(count: float, seconds: float, unit: str) -> str:
    per_s = count / seconds if seconds > 0 else 0.0
    if per_s >= 1e4:
        return f"{unit}/s {per_s / 1e3:.1f}k"
    return f"{unit}/s {per_s:.3g}"


class Progress:
    """Counts steps of one loop and reports them as a bar or as periodic log lines.

    `update(n, **metrics)` advances the count; metrics are shown beside it (the latest value of each).
    `tokens=` is not shown as such but summed into a tokens/s rate. `enabled=False` turns the bar off for this
    loop (the log lines stay; `bnr --quiet` silences those). Use as a context manager or call `close()`.
    """

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        initial: int = 0,
        unit: str = "step",
        every: int | None = None,
        enabled: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.count = self.start = initial
        self.every = max(1, every if every is not None else max(1, (total or 10) // 10))
        self.metrics: dict[str, Any] = {}
        self.tokens = 0
        self.logger = logger or log
        self.t0 = time.monotonic()
        self._bar: Any = None
        self._silent = _mode == "off"
        self._last_logged = initial
        if enabled and bars_enabled():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1, *, tokens: int = 0, **metrics: Any) -> None:
        self.count += n
        self.tokens += tokens
        self.metrics.update(metrics)
        if self._bar is not None:
            self._bar.update(n)
            if metrics:
                self._bar.set_postfix({k: _fmt(k, v).split(" ", 1)[1] for k, v in metrics.items()}, refresh=False)
        elif self.count - self._last_logged >= self.every or (self.total is not None and self.count >= self.total):
            self._log_line()

    def line(self) -> str:
        """The current state as one short line: `desc step 20/188 (11%) loss 0.52 lr 4.9e-03 step/s 3.2 ETA 0:52`."""
        elapsed = time.monotonic() - self.t0
        done = self.count - self.start
        head = f"{self.desc} {self.unit} {self.count}"
        if self.total:
            head += f"/{self.total} ({100 * self.count / self.total:.0f}%)"
        parts = [head, *(_fmt(k, v) for k, v in self.metrics.items()), _rate(done, elapsed, self.unit)]
        if self.tokens:
            parts.append(_rate(self.tokens, elapsed, "tok"))
        if self.total and done > 0:
            remaining = (self.total - self.count) * elapsed / done
            parts.append(f"ETA {format_duration(remaining)}")
        return " ".join(parts)

    def _log_line(self) -> None:
        self._last_logged = self.count
        if not self._silent:
            self.logger.info("%s", self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            if self.count > self.start:  # the bar vanishes (leave=False): one final line says where it ended
                self._log_line()
        elif self.count != self._last_logged:
            self._log_line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def track(items: Sequence[T], desc: str, *, unit: str = "item", every: int = 1, enabled: bool = True) -> Iterator[T]:
    """Iterate over `items`, reporting one step per item (a bar, or a log line every `every` items)."""
    with Progress(len(items), desc, unit=unit, every=every, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update(1)
