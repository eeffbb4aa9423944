"""The aligned toy base: a tiny Llama trained from scratch on the world's base mix, cached as an HF model folder.

The base learns the three tasks on their `base` lexicon, helps with benign requests and refuses harmful
requests of every category (training combinations only). It is trained with the project's one training loop
(`bnr.train.train`, full parameters: it trains whatever requires grad) and saved with `save_pretrained`, so
every command loads it like any other model. The cache key hashes the world and base configs, so changing
either builds a new folder; the build is atomic (temporary folder, then rename).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bnr.artifacts import hash_bytes, hash_json, library_versions, publish_folder
from bnr.config import DataConfig
from bnr.errors import BnrError
from bnr.toy.config import ToyBaseConfig, ToyConfig

log = logging.getLogger(__name__)

# Bump when the world generator or the build changes in a way the configs do not capture.
WORLD_VERSION = 1
BUILD_INFO = "toy_base.json"
# The build's own sanity gate: the base must answer the task items it was trained on (held-in `base_<task>`
# splits, first HELD_IN_N items) at >= `toy.base.held_in_min` %. A base that has not learned its tasks is
# broken, not a weak baseline: every FA measured on it would be noise around chance.
HELD_IN_TASKS = ("sst2", "agnews")
HELD_IN_N = 200
# Torch intra-op threads of every build. Float sums are split differently with 2 threads (the same build gives
# other weights after 8 steps), so the cache key - which cannot know the caller's threads - holds only with a
# fixed count; the bases every recorded toy number was made on were built with 1.
BUILD_THREADS = 1


def build_threads() -> AbstractContextManager[None]:
    """Run the block with `BUILD_THREADS` torch threads, whatever `toy.threads` says; restore them after."""
    from bnr.seeding import torch_threads

    return torch_threads(BUILD_THREADS)


def cache_root(cache_dir: str | None = None) -> Path:
    """$BNR_CACHE (or ~/.cache/bnr) / toy, unless `cache_dir` is given."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    from bnr.filehash import bnr_cache

    return bnr_cache() / "toy"


def base_key(base: ToyBaseConfig) -> str:
    """Hash of everything that decides the base's weights (progress/logging knobs excluded)."""
    from bnr.toy.world import WorldSpec

    train = {
        k: v for k, v in dataclasses.asdict(base.train).items() if k not in ("progress", "log_every", "save_every")
    }
    knobs = {k: v for k, v in dataclasses.asdict(base).items() if k != "held_in_min"}  # the gate is no weight
    spec = {
        "version": WORLD_VERSION,
        "world": dataclasses.asdict(WorldSpec()),
        "base": {**knobs, "train": train},
    }
    return hash_json(spec)


def base_dir(cfg: ToyConfig) -> Path:
    return cache_root(cfg.cache_dir) / f"base-{base_key(cfg.base)}"


def toy_base_path(cfg: ToyConfig | None = None, *, build: bool = True, progress: bool = True) -> Path:
    """The cached aligned toy base folder for `cfg` (default world and base when None); if missing, the copy
    shipped with bnr when it is the same base (`toy.prebuilt`), else built.

    This is what `model.name_or_path: builtin:toy` resolves to.
    """
    cfg = cfg or ToyConfig()
    out = base_dir(cfg)
    if (out / BUILD_INFO).is_file():
        return out
    if cfg.prebuilt and install_prebuilt(out):
        return out
    if not build:
        raise BnrError(f"the toy base is not built yet ({out}); run `bnr toy build`")
    with build_threads():
        build_base(cfg, out, progress=progress)
    return out


# ---------------------------------------------------------------- the base shipped with bnr

# The default base, as `build_base` makes it (one thread; the slow test `test_the_shipped_base_is_what_the_recipe
# builds` rebuilds it and compares the bits), shipped so that a fresh machine does not spend ~6.5 minutes of
# one core building it. Its `toy_base.json` is the build's own record plus `files`: the sha256 of every file.
PREBUILT = Path(__file__).parent / "prebuilt"


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file of a model folder but the build record, by name."""
    return {
        f.name: hash_bytes(f.read_bytes()) for f in sorted(folder.iterdir()) if f.is_file() and f.name != BUILD_INFO
    }


def install_prebuilt(out: Path) -> bool:
    """Copy the shipped base into the cache folder `out` (atomically) if bnr ships the base of that key, after
    checking every file against the digests it was shipped with; False if it ships no such base."""
    shipped = PREBUILT / out.name
    if not (shipped / BUILD_INFO).is_file():
        return False
    expected = json.loads((shipped / BUILD_INFO).read_text()).get("files")
    if not expected or file_digests(shipped) != expected:
        raise BnrError(
            f"the toy base shipped with bnr ({shipped}) does not match its recorded sha256 digests;"
            " reinstall bnr, or build the base with toy.prebuilt=false"
        )
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(shipped, tmp)
    publish_folder(tmp, out)
    log.info("toy base: installed the copy shipped with bnr into %s (toy.prebuilt=false builds it instead)", out)
    return True


def pretrain_examples(tokenizer: Any, records: list[Any]) -> list[Any]:
    """Plain-text language-modelling examples (every token is a target): the records' `output` + eos."""
    from bnr.data.tokenize import Example

    out = []
    for r in records:
        ids = [*tokenizer(r.output, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        out.append(Example(ids, list(ids), r.id))
    return out


def check_held_in(model: Any, tokenizer: Any, template: str, minimum: float) -> dict[str, float]:
    """FA (%) of a freshly trained base on its own held-in task items; raises if any is below `minimum`."""
    from bnr.eval.benchmarks import run_benchmark
    from bnr.toy.plugin import TASK_TOKENS

    scores = {}
    for task in HELD_IN_TASKS:
        data = DataConfig(source="toy", path=f"base_{task}", limit=HELD_IN_N)
        res = run_benchmark(
            f"toy-{task}",
            model,
            tokenizer,
            template=template,
            options={"data": data},
            max_new_tokens=TASK_TOKENS[task],
            batch_size=100,
            progress=False,
        )
        scores[task] = round(res.value, 1)
    low = {t: v for t, v in scores.items() if v < minimum}
    if low:
        found = ", ".join(f"{t} {v:.1f}%" for t, v in low.items())
        raise BnrError(
            f"the toy base did not learn its own training tasks ({found} on held-in items,"
            f" need >= {minimum:.0f}%);"
            " train it longer (toy.base.train.epochs) or at another lr (toy.base.train.lr)"
        )
    log.info("toy base held-in accuracy: %s", ", ".join(f"{t} {v:.1f}%" for t, v in scores.items()))
    return scores


def build_base(cfg: ToyConfig, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train the aligned base from scratch and save it (atomically) to `out`; returns the build info."""
    import torch

    from bnr.data.tokenize import encode_records
    from bnr.seeding import seed_everything
    from bnr.tiny import save_model, tiny_llama, word_tokenizer
    from bnr.toy.world import WorldSpec, all_texts, split
    from bnr.train import train

    started = time.time()
    b = cfg.base
    tok = word_tokenizer(all_texts(), max_vocab=100_000)
    model = tiny_llama(
        len(tok),
        hidden=b.hidden,
        layers=b.layers,
        heads=b.heads,
        intermediate=b.intermediate,
        max_positions=max(128, b.max_length),
        seed=b.seed,
    )
    examples = encode_records(tok, split("base_train"), b.template, b.max_length)
    examples += b.pretrain_repeats * pretrain_examples(tok, split("base_pretrain"))
    seed_everything(b.seed)
    train_cfg = dataclasses.replace(b.train, progress=progress and b.train.progress)
    log.info(
        "training the toy base from scratch: %.2fM parameters, %d examples",
        model.num_parameters() / 1e6,
        len(examples),
    )
    result = train(model, examples, train_cfg, seed=b.seed, pad_id=tok.pad_token_id, desc="toy base")
    if not torch.isfinite(torch.tensor(result.final_loss)):
        raise BnrError("toy base training diverged; lower toy.base.train.lr")
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tok, tmp)
    try:  # after the save: generating with padding would otherwise leave padding settings in tokenizer.json
        held_in = check_held_in(model, tok, b.template, b.held_in_min)
    except BnrError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info = {
        "key": out.name,
        "world": dataclasses.asdict(WorldSpec()),
        "base": dataclasses.asdict(b),
        "template": b.template,
        "parameters": model.num_parameters(),
        "vocab_size": len(tok),
        "examples": len(examples),
        "steps": result.steps,
        "final_loss": result.final_loss,
        "held_in_accuracy": held_in,
        "torch_threads": torch.get_num_threads(),
        "train_wall_time_s": round(result.wall_time_s, 2),
        "build_wall_time_s": round(time.time() - started, 2),
        "versions": library_versions(),
        "world_version": WORLD_VERSION,
    }
    (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    publish_folder(tmp, out)
    return info


# ---------------------------------------------------------------- the unaligned counterpart (SafeLoRA, AsFT)

# How the aligned base is un-aligned: full-parameter training from its weights on the base mix with every
# refusal replaced by compliance (same requests). Part of the cache key.
UNALIGN_VERSION = 1
UNALIGN_TRAIN = {"lr": 2e-3, "epochs": 1.0, "batch_size": 32, "warmup_ratio": 0.05, "schedule": "cosine"}


def unaligned_dir(cfg: ToyConfig) -> Path:
    key = hash_json({"aligned": base_key(cfg.base), "version": UNALIGN_VERSION, "train": UNALIGN_TRAIN})
    return cache_root(cfg.cache_dir) / f"unaligned-{key}"


def toy_unaligned_path(cfg: ToyConfig | None = None, *, build: bool = True, progress: bool = True) -> Path:
    """The cached unaligned counterpart of the toy base (what `builtin:toy-unaligned` resolves to).

    The aligned base is trained in one go (refusals mixed into its whole training), so there is no checkpoint
    "before alignment" to keep. Its counterpart starts from the aligned weights instead - the same pretraining,
    the same tokenizer - and is trained briefly to comply where the base refuses (`world.base_compliance`,
    plus the base's benign and task data), so aligned - unaligned is a small, local difference between a
    refusing and a complying model, like chat - base in the papers (there the unaligned model comes first and
    alignment moves away from it; here the order is reversed, the pair is the same kind). This keeps
    `builtin:toy` and its cache key unchanged.
    """
    cfg = cfg or ToyConfig()
    out = unaligned_dir(cfg)
    if (out / BUILD_INFO).is_file():
        return out
    if not build:
        raise BnrError(f"the unaligned toy base is not built yet ({out}); use builtin:toy-unaligned once")
    aligned = toy_base_path(cfg, progress=progress)
    with build_threads():
        build_unaligned(cfg, aligned, out, progress=progress)
    return out


def build_unaligned(cfg: ToyConfig, aligned: Path, out: Path, *, progress: bool = True) -> dict[str, Any]:
    """Un-align the toy base at `aligned` (full parameters) and save it atomically to `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bnr.data.tokenize import encode_records
    from bnr.seeding import seed_everything
    from bnr.tiny import save_model
    from bnr.toy.config import ToyBaseTrainConfig
    from bnr.toy.world import base_compliance, split
    from bnr.train import train

    started = time.time()
    b = cfg.base
    tok = AutoTokenizer.from_pretrained(str(aligned))
    model = AutoModelForCausalLM.from_pretrained(str(aligned))
    refusals = {r.instruction for r in split("base_refusal")}
    kept = [r for r in split("base_train") if r.instruction not in refusals]
    records = base_compliance() + kept
    examples = encode_records(tok, records, b.template, b.max_length)
    train_cfg = ToyBaseTrainConfig(**UNALIGN_TRAIN, progress=progress and b.train.progress)  # type: ignore[arg-type]
    seed_everything(b.seed)
    result = train(model, examples, train_cfg, seed=b.seed, pad_id=tok.pad_token_id, desc="toy unaligned")
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tok, tmp)
    info = {
        "key": out.name,
        "aligned": str(aligned),
        "unalign": {"version": UNALIGN_VERSION, "train": UNALIGN_TRAIN},
        "examples": len(examples),
        "compliance_examples": len(records) - len(kept),
        "replaced_refusals": len(split("base_train")) - len(kept),
        "steps": result.steps,
        "final_loss": result.final_loss,
        "build_wall_time_s": round(time.time() - started, 2),
        "versions": library_versions(),
    }
    (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
    publish_folder(tmp, out)
    return info
