"""Per-sample gradient statistics of adapted Linear modules, from hooks, without forming weight gradients.

For a Linear layer y = x W^T the gradient of a loss L is grad_W L = sum_t g_t x_t^T (g_t = dL/dy_t, x_t the
input at position t). Everything this module reports is a contraction of that sum, computed from the
layer's input x and output gradient g one layer at a time, while the backward pass reaches it:

* <grad_W, B A> = sum_t (B^T g_t) . (A x_t)                                 (a direction in factor form)
* ||grad_W||_F^2 = sum_{t,t'} (x_t . x_t') (g_t . g_t')                    (the Gram trick over positions)
* LoRA factors on that layer (delta W = s B A, dropout off):
  grad_B = s sum_t g_t (A x_t)^T,   grad_A = s sum_t (B^T g_t) x_t^T          (their norms by the same trick)

Sums over t run inside one sample, so a padded batch keeps per-sample attribution: samples do not interact
(causal attention with a padding mask), and a padded position after the last real token has g_t = 0.
The loss of sample i is its own response-only mean token cross-entropy, so the batch loss is the *sum* of
per-sample losses and sample i's rows of g are exactly the gradient of L_i.

No parameter requires grad during the pass (the input embeddings do instead), so autograd never builds any
weight gradient, nothing is written to `.grad`, and the model is left bit-identical.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bnr.data.tokenize import IGNORE_INDEX, Example, collate
from bnr.lora_files import PEFT_PREFIX, LoraModule

BASE_LAYER_SUFFIX = ".base_layer"
SHORT_KIND = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
}
_LAYER_RE = re.compile(r"\.(\d+)\.")


@dataclass
class ModuleSpec:
    """What to measure on one adapted module.

    `directions`: safety directions v = vec(B A) (scaling ignored: S is scale-free);
    `loras`: LoRA adapters on this module whose A/B gradient norms are reported (as if trainable).
    """

    name: str
    layer: int
    kind: str
    directions: dict[str, LoraModule] = field(default_factory=dict)
    loras: dict[str, LoraModule] = field(default_factory=dict)


@dataclass
class SampleStats:
    """Per-sample raw statistics of one (model, data set) pass; every tensor has one entry per sample.

    `inner[module][direction]` is <grad_W L_i, B A> in the *gradient* sign convention (unnormalised);
    `grad_sq[module]` is ||grad_W L_i||_F^2; `lora_sq[module]["<lora>.A" | "<lora>.B"]` the squared norms.
    """

    ids: list[str]
    loss: Tensor
    grad_sq: dict[str, Tensor]
    inner: dict[str, dict[str, Tensor]]
    lora_sq: dict[str, dict[str, Tensor]]


def canonical_name(name: str) -> str:
    """A module's name relative to the causal LM, as LoRA adapter files key it (no PEFT wrapper parts)."""
    if name.startswith(PEFT_PREFIX):
        name = name[len(PEFT_PREFIX) :]
    if name.endswith(BASE_LAYER_SUFFIX):
        name = name[: -len(BASE_LAYER_SUFFIX)]
    return name


def layer_index(name: str) -> int:
    """The block index in a module name (`model.layers.7.mlp.up_proj` -> 7); -1 when there is none."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else -1


def module_kind(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    return SHORT_KIND.get(last, last)


def find_modules(model: torch.nn.Module, targets: list[str]) -> dict[str, tuple[str, torch.nn.Linear]]:
    """{canonical name: (attribute path, Linear)} for every Linear whose last name part is in `targets`.

    Inside a PEFT model the hooked Linear is the LoRA layer's `base_layer`: its input is the LoRA input and
    its output gradient is the module's output gradient.
    """
    found: dict[str, tuple[str, torch.nn.Linear]] = {}
    for path, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear):
            continue
        name = canonical_name(path)
        if name.rsplit(".", 1)[-1] in targets:
            found[name] = (path, mod)
    return found


def probe_factors(d_in: int, d_out: int, r: int, alpha: float, generator: torch.Generator) -> LoraModule:
    """A freshly initialised LoRA as PEFT makes one: A ~ kaiming_uniform(a=sqrt 5) = U(+-1/sqrt d_in), B = 0."""
    bound = 1.0 / math.sqrt(d_in)
    A = (torch.rand(r, d_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return LoraModule(A=A.float(), B=torch.zeros(d_out, r), scaling=alpha / r)


def per_sample_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over each sample's unmasked label positions (HF's loss, per sample)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    tok = F.cross_entropy(shift_logits.transpose(1, 2), shift_labels, ignore_index=IGNORE_INDEX, reduction="none")
    count = (shift_labels != IGNORE_INDEX).sum(1).clamp(min=1)
    return tok.sum(1) / count


def _gram(a: Tensor) -> Tensor:
    return a @ a.transpose(1, 2)


class _Collector:
    """Hooks on each module: keep the input at forward time, reduce it with the output gradient at backward."""

    def __init__(self, modules: dict[str, tuple[str, torch.nn.Linear]], specs: dict[str, ModuleSpec]) -> None:
        self.modules = modules
        self.specs = specs
        self.batch: dict[str, dict[str, Tensor]] = {}
        self._device_factors: dict[tuple[str, str], LoraModule] = {}

    def _factors(self, key: tuple[str, str], f: LoraModule, like: Tensor) -> LoraModule:
        if key not in self._device_factors:
            dt = like.dtype
            self._device_factors[key] = LoraModule(
                A=f.A.to(like.device, dt), B=f.B.to(like.device, dt), scaling=f.scaling
            )
        return self._device_factors[key]

    @contextmanager
    def hooked(self) -> Iterator[None]:
        handles = [mod.register_forward_hook(self._forward_hook(name)) for name, (_, mod) in self.modules.items()]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _forward_hook(self, name: str) -> Any:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if not output.requires_grad:
                return
            x = args[0]
            output.register_hook(lambda g: self._reduce(name, x, g))

        return hook

    def _reduce(self, name: str, x: Tensor, g: Tensor) -> None:
        """All statistics of one module for the whole batch; only (B, T, T) and (B, T, r) temporaries."""
        dt = torch.promote_types(x.dtype, torch.float32)
        x = x.detach().to(dt).reshape(x.shape[0], -1, x.shape[-1])
        g = g.detach().to(dt).reshape(g.shape[0], -1, g.shape[-1])
        gx, gg = _gram(x), _gram(g)
        out = {"grad_sq": (gx * gg).sum((1, 2))}
        spec = self.specs[name]
        for d, f in spec.directions.items():
            f = self._factors(("dir", f"{name}:{d}"), f, x)
            out[f"inner:{d}"] = ((x @ f.A.T) * (g @ f.B)).sum((1, 2))
        for lo, f in spec.loras.items():
            f = self._factors(("lora", f"{name}:{lo}"), f, x)
            ax = (x @ f.A.T) * f.scaling  # (B, T, r)
            bg = (g @ f.B) * f.scaling
            out[f"lora:{lo}.B"] = (gg * _gram(ax)).sum((1, 2))
            out[f"lora:{lo}.A"] = (_gram(bg) * gx).sum((1, 2))
        if name in self.batch:
            raise RuntimeError(f"module {name!r} ran twice in one forward pass; per-sample norms need one call")
        self.batch[name] = {k: v.detach().double().cpu() for k, v in out.items()}


@contextmanager
def frozen_for_analysis(model: torch.nn.Module) -> Iterator[None]:
    """No parameter requires grad inside (so no weight gradient is ever built); flags and mode restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    for p, _ in flags:
        p.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def collect_sample_stats(
    model: torch.nn.Module,
    examples: list[Example],
    specs: dict[str, ModuleSpec],
    *,
    pad_id: int,
    batch_size: int = 8,
) -> SampleStats:
    """Per-sample loss, ||grad_W||^2, <grad_W, v> and LoRA A/B gradient norms for every module in `specs`.

    `specs` is keyed by canonical module name (see `find_modules`); the model is only read.
    """
    targets = sorted({n.rsplit(".", 1)[-1] for n in specs})
    modules = {n: m for n, m in find_modules(model, targets).items() if n in specs}
    missing = set(specs) - set(modules)
    if missing:
        raise ValueError(f"modules not found in the model: {sorted(missing)[:3]}")
    collector = _Collector(modules, specs)
    device = next(model.parameters()).device
    embed: Any = model.get_input_embeddings()  # type: ignore[operator]
    parts: dict[str, list[Tensor]] = {}
    losses: list[Tensor] = []
    with frozen_for_analysis(model), collector.hooked():
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size], pad_id).items()}
            with torch.no_grad():
                emb = embed(batch["input_ids"])
            emb = emb.detach().requires_grad_(True)
            logits = model(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits
            loss = per_sample_loss(logits, batch["labels"])
            collector.batch.clear()
            torch.autograd.grad(loss.sum(), emb)
            losses.append(loss.detach().double().cpu())
            for name, stats in collector.batch.items():
                for key, value in stats.items():
                    parts.setdefault(f"{name}\t{key}", []).append(value)
            collector.batch.clear()
    return _assemble([e.id for e in examples], torch.cat(losses), parts, specs)


def _assemble(
    ids: list[str], loss: Tensor, parts: dict[str, list[Tensor]], specs: dict[str, ModuleSpec]
) -> SampleStats:
    grad_sq: dict[str, Tensor] = {}
    inner: dict[str, dict[str, Tensor]] = {n: {} for n in specs}
    lora_sq: dict[str, dict[str, Tensor]] = {n: {} for n in specs}
    for joined, chunks in parts.items():
        name, key = joined.split("\t")
        value = torch.cat(chunks)
        if key == "grad_sq":
            grad_sq[name] = value
        elif key.startswith("inner:"):
            inner[name][key[len("inner:") :]] = value
        else:
            lora_sq[name][key[len("lora:") :]] = value
    zeros = torch.zeros(len(ids), dtype=torch.float64)  # a module the loss does not reach has zero gradient
    for name, spec in specs.items():
        grad_sq.setdefault(name, zeros)
        for d in spec.directions:
            inner[name].setdefault(d, zeros)
        for lo in spec.loras:
            lora_sq[name].setdefault(f"{lo}.A", zeros)
            lora_sq[name].setdefault(f"{lo}.B", zeros)
    return SampleStats(ids, loss, grad_sq, inner, lora_sq)
