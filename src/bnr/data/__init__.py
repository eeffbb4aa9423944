"""Records -> prompts (templates) -> tokenized, masked batches; named dataset sources."""

from bnr.data.records import Record

__all__ = ["Record"]
