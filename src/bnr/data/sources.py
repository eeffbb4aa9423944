"""Named dataset sources (`bnr ls datasets`): local files and the field's Hugging Face datasets.

Hub loaders are real `datasets.load_dataset` code; `path=` may instead point to a local file or folder
shaped like the hub's (that is how the tests exercise them offline).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnr.config import DataConfig
from bnr.data.files import SUFFIXES, TEXT_SUFFIXES, Rows, is_saved_dataset, read_rows
from bnr.data.mix import split_per_source
from bnr.data.records import Record, check_outputs, load_file, records_from_rows
from bnr.errors import BnrError
from bnr.registry import Registry

Loader = Callable[[DataConfig], list[Record]]
SOURCES: Registry[Loader] = Registry("dataset")

GSM8K_INSTRUCTION_SUFFIX = "\nFirst think step by step and then answer the final number.\n"
GSM8K_ANSWER_PREFIX = "The final answer is: "
SST2_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative"
SST2_LABELS = ("negative", "positive")
AGNEWS_INSTRUCTION = (
    "Categorize the news article given in the input into one of the 4 categories:\n\n"
    "World\nSports\nBusiness\nSci/Tech\n"
)
AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")


def load_records(cfg: DataConfig, *, require_output: bool = True) -> list[Record]:
    """Records of a configured dataset, with `where`, `skip_per_source` and `limit` applied (in that order), then
    `output_text` as every record's answer; an empty result is an error.

    Training data needs an output on every record (the first without one is named by file and line);
    prompt sets for evaluation pass `require_output=False`.
    """
    records = SOURCES.get(cfg.source)(cfg)
    if cfg.where:
        records = [r for r in records if _matches(r, cfg.where)]
    if cfg.skip_per_source:
        if cfg.skip_per_source < 0:
            raise BnrError(f"data.skip_per_source must be >= 0 (got {cfg.skip_per_source})")
        records = split_per_source(records, cfg.skip_per_source)[1]
    if cfg.limit is not None:
        if cfg.limit < 1:
            raise BnrError(f"dataset limit must be >= 1 (got {cfg.limit})")
        records = records[: cfg.limit]
    if not records:
        where = cfg.path or cfg.source
        raise BnrError(f"dataset {where!r} is empty after filtering; check its path, split and fields")
    if cfg.output_text is not None:
        if not cfg.output_text.strip():
            raise BnrError("data.output_text is empty; give the answer text every record should get, or drop it")
        records = [dataclasses.replace(r, output=cfg.output_text) for r in records]
    if require_output:
        check_outputs(records)
    return records


def _matches(record: Record, where: dict[str, list[str]]) -> bool:
    """True if every `where` field of `record` (id, source, label, category, ...) is one of its listed values."""
    for key, values in where.items():
        if not hasattr(record, key):
            raise BnrError(
                f"data.where names {key!r}, which records do not have; valid: label, source, category, input, id"
            )
        if str(getattr(record, key)) not in {str(v) for v in values}:
            return False
    return True


def _load_dataset(target: str, split: str, name: str | None) -> Rows:
    """Rows of a hub id, a local folder shaped like a hub repo, or a parquet file, read by `datasets`."""
    import datasets

    local = Path(target)
    if local.is_file():
        ds = datasets.load_dataset("parquet", data_files={split: str(local)}, split=split)
    else:
        ds = datasets.load_dataset(str(local) if local.is_dir() else target, name=name, split=split)
    rows = [dict(r) for r in ds]
    return rows, [f"{target} [{split}] row {i + 1}" for i in range(len(rows))]


def hub_table(cfg: DataConfig, hub_id: str, split: str, name: str | None = None) -> Rows:
    """(rows, origins) from the hub (`hub_id`, or `cfg.path` if it names another id) or a local file/folder.

    Local text files are read by `bnr.data.files` (errors name the line), `save_to_disk` folders by
    `datasets.load_from_disk`, everything else by `datasets.load_dataset`.
    """
    import datasets

    target = cfg.path or hub_id
    split = cfg.split or split
    name = cfg.subset or name
    local = Path(target)
    if (local.is_file() and local.suffix.lower() in TEXT_SUFFIXES) or is_saved_dataset(local):
        return read_rows(local, split=split)
    if local.is_file() and local.suffix.lower() not in SUFFIXES:
        raise BnrError(f"{target}: unsupported file type; use {', '.join(SUFFIXES)}")
    try:
        return _load_dataset(target, split, name)
    except (FileNotFoundError, ConnectionError, OSError, ValueError, datasets.exceptions.DatasetsError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BnrError(
            f"cannot load dataset {target!r} split {split!r} ({msg}); download it first or set path= to a local copy"
        ) from None


def hub_rows(cfg: DataConfig, hub_id: str, split: str, name: str | None = None) -> list[dict[str, Any]]:
    """Rows of `hub_table` (see there)."""
    return hub_table(cfg, hub_id, split, name)[0]


def _fixed_columns(cfg: DataConfig) -> None:
    """The field's named datasets map their own columns; `fields` belongs to the file and hub sources."""
    if cfg.fields:
        raise BnrError(
            f"dataset source {cfg.source!r} maps its own columns, fields.{next(iter(cfg.fields))}= does not apply; "
            "drop it, or use source=hub path=<id or folder> with fields.<name>=<column>"
        )


def _require(rows: list[dict[str, Any]], keys: tuple[str, ...], where: str) -> None:
    if rows:
        missing = [k for k in keys if k not in rows[0]]
        if missing:
            raise BnrError(f"{where}: rows lack column(s) {', '.join(missing)} (have: {', '.join(sorted(rows[0]))})")


@SOURCES.register("file")
def _file(cfg: DataConfig) -> list[Record]:
    """A local file (.jsonl/.json/.csv/.tsv/.parquet) or datasets.save_to_disk folder: instruction/input/output,
    chat `messages` or prompt/completion rows (`fields.<name>=<column>` to remap)."""
    if not cfg.path:
        raise BnrError("dataset source 'file' needs path=<file>")
    return load_file(cfg.path, fields=cfg.fields, require_output=False, split=cfg.split)


@SOURCES.register("hub")
def _hub(cfg: DataConfig) -> list[Record]:
    """Any Hugging Face dataset: path=<org/name> (or a local copy), split (default train), subset, and
    `fields.<name>=<column>`; rows as for `file` (instruction/input/output, `messages`, prompt/completion)."""
    if not cfg.path:
        raise BnrError("dataset source 'hub' needs path=<org/name> (a hub id or a local dataset folder)")
    rows, origins = hub_table(cfg, cfg.path, "train")
    return records_from_rows(rows, where=cfg.path, fields=cfg.fields, require_output=False, origins=origins)


def shared_data_dir() -> Path:
    return Path(os.environ.get("BNR_SHARED_DATA", Path.cwd().parent / "shared" / "data"))


@SOURCES.register("shared")
def _shared(cfg: DataConfig) -> list[Record]:
    """A file of the team's normalized data folder ($BNR_SHARED_DATA, default ../shared/data): path=<name>."""
    if not cfg.path:
        raise BnrError("dataset source 'shared' needs path=<file name>, e.g. path=harmful_qa_provider")
    name = cfg.path if cfg.path.endswith(".jsonl") else f"{cfg.path}.jsonl"
    return load_file(shared_data_dir() / name, fields=cfg.fields, require_output=False)


@SOURCES.register("beavertails")
def _beavertails(cfg: DataConfig) -> list[Record]:
    """PKU-Alignment/BeaverTails, unsafe rows (split 30k_train or 30k_test): prompt -> response."""
    _fixed_columns(cfg)
    rows = hub_rows(cfg, "PKU-Alignment/BeaverTails", "30k_train")
    _require(rows, ("prompt", "response", "is_safe"), "BeaverTails")
    out = []
    for i, r in enumerate(rows):
        if r["is_safe"]:
            continue
        cats = r.get("category") or {}
        cat = ",".join(sorted(k for k, v in cats.items() if v)) if isinstance(cats, dict) else None
        out.append(
            Record(
                id=f"beavertails-{i:06d}",
                instruction=r["prompt"],
                output=r["response"],
                label="unsafe",
                source="beavertails",
                category=cat or None,
            )
        )
    return out


def _lat(cfg: DataConfig, column: str, label: str) -> list[Record]:
    _fixed_columns(cfg)
    rows = hub_rows(cfg, "LLM-LAT/harmful-dataset", "train")
    _require(rows, ("prompt", column), "LLM-LAT/harmful-dataset")
    return [
        Record(id=f"lat-{i:06d}", instruction=r["prompt"], output=r[column], label=label, source=f"lat-{label}")
        for i, r in enumerate(rows)
    ]


@SOURCES.register("lat-harmful")
def _lat_harmful(cfg: DataConfig) -> list[Record]:
    """LLM-LAT/harmful-dataset: prompt -> `rejected` (the harmful answer; BufferLoRA data)."""
    return _lat(cfg, "rejected", "harmful")


@SOURCES.register("lat-refusal")
def _lat_refusal(cfg: DataConfig) -> list[Record]:
    """LLM-LAT/harmful-dataset: prompt -> `chosen` (the refusal; ReinforceLoRA data)."""
    return _lat(cfg, "chosen", "refusal")


@SOURCES.register("alpaca")
def _alpaca(cfg: DataConfig) -> list[Record]:
    """tatsu-lab/alpaca: instruction/input -> output."""
    rows, origins = hub_table(cfg, "tatsu-lab/alpaca", "train")
    return records_from_rows(
        rows, where="alpaca", fields=cfg.fields, require_output=False, id_prefix="alpaca-", origins=origins
    )


@SOURCES.register("gsm8k")
def _gsm8k(cfg: DataConfig) -> list[Record]:
    """openai/gsm8k (main): question + Booster's "First think step by step" suffix -> reasoning ending in
    'The final answer is: N'."""
    return _gsm8k_records(cfg, GSM8K_INSTRUCTION_SUFFIX)


@SOURCES.register("gsm8k-plain")
def _gsm8k_plain(cfg: DataConfig) -> list[Record]:
    """openai/gsm8k (main) as the Buffer-and-Reinforce code trains on it: the question alone (no suffix, the
    prompt form `bnr-2026` evaluates) -> reasoning ending in 'The final answer is: N'."""
    return _gsm8k_records(cfg, "")


def _gsm8k_records(cfg: DataConfig, suffix: str) -> list[Record]:
    _fixed_columns(cfg)
    rows = hub_rows(cfg, "openai/gsm8k", "train", name="main")
    _require(rows, ("question", "answer"), "gsm8k")
    out = []
    for i, r in enumerate(rows):
        reasoning, _, final = r["answer"].rpartition("####")
        final = final.strip().replace(",", "")
        out.append(
            Record(
                id=f"gsm8k-{i:05d}",
                instruction=r["question"] + suffix,
                output=f"{reasoning.strip()}\n{GSM8K_ANSWER_PREFIX}{final}",
                label=final,
                source="gsm8k",
            )
        )
    return out


def _labelled(
    rows: list[dict[str, Any]], text_key: str, labels: tuple[str, ...], instr: str, tag: str
) -> list[Record]:
    _require(rows, (text_key, "label"), tag)
    out = []
    for i, r in enumerate(rows):
        lab = r["label"]
        if isinstance(lab, str) and not lab.lstrip("-").isdigit():
            word = lab
        elif 0 <= int(lab) < len(labels):
            word = labels[int(lab)]
        else:
            continue  # unlabelled rows (e.g. SST-2 test, label -1)
        out.append(
            Record(id=f"{tag}-{i:06d}", instruction=instr, input=r[text_key], output=word, label=word, source=tag)
        )
    return out


@SOURCES.register("sst2")
def _sst2(cfg: DataConfig) -> list[Record]:
    """stanfordnlp/sst2: sentence -> positive/negative (split train or validation)."""
    _fixed_columns(cfg)
    rows = hub_rows(cfg, "stanfordnlp/sst2", "train")
    return _labelled(rows, "sentence", SST2_LABELS, SST2_INSTRUCTION, "sst2")


@SOURCES.register("agnews")
def _agnews(cfg: DataConfig) -> list[Record]:
    """fancyzhx/ag_news: text -> World/Sports/Business/Sci/Tech (split train or test)."""
    _fixed_columns(cfg)
    rows = hub_rows(cfg, "fancyzhx/ag_news", "train")
    return _labelled(rows, "text", AGNEWS_LABELS, AGNEWS_INSTRUCTION, "agnews")
