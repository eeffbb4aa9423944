"""The one batched generation loop that every benchmark uses.

Prompts are tokenized once, sorted by length (longest first, so an out-of-memory batch shows up at once and
padding stays small), generated in left-padded batches with the model's KV cache, greedy by default, cut at
stop strings and returned in input order.

`until` (a test on a row's text so far) ends each row as soon as it holds: greedy decoding then runs its own loop
(`_generate_until`), which runs the prompts a few rows at a time (little padding), joins their KV caches into one
batch and drops each finished row from it, so a batch costs what its unfinished rows cost, not what its longest
row does (transformers' `generate` keeps computing finished rows until the last one ends). A scorer that reads
only the opening of an answer (the refusal rule) gives the same verdicts for a fraction of the decoding.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bnr.errors import BnrError
from bnr.progress import Progress

if TYPE_CHECKING:  # torch is imported where it runs, so importing bnr.eval (and a plug-in's config) stays light
    import torch

log = logging.getLogger(__name__)


class FiniteLogitsCheck:
    """A logits processor that records whether any step's logits of the batch held NaN or +Inf (-Inf is a mask
    that other processors set). One fused comparison per step on the device, no sync: read `ok` after generating."""

    def __init__(self) -> None:
        self.ok: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        finite = (scores < float("inf")).all()  # False for NaN and +Inf
        self.ok = finite if self.ok is None else self.ok & finite
        return scores

    def passed(self) -> bool:
        return self.ok is None or bool(self.ok)


def non_finite_logits() -> BnrError:
    """The error for a generation whose logits held NaN or +Inf (`FiniteLogitsCheck`)."""
    return BnrError(
        "the model's logits became NaN/Inf while generating (broken weights, or an overflow in this dtype); "
        "its completions are not scored - check the adapter and the base, or use model.dtype=float32"
    )


def trim_at_stop(text: str, stop: list[str] | None) -> str:
    """Cut `text` at the earliest occurrence of any stop string."""
    if not stop:
        return text
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def context_length(model: Any, tokenizer: Any) -> int | None:
    """The model's context in tokens (its config's `max_position_embeddings`, else the tokenizer's
    `model_max_length` when it is a real number); None when neither says."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(n, int) and n > 0:
        return n
    n = getattr(tokenizer, "model_max_length", None)
    return n if isinstance(n, int) and 0 < n < 10**7 else None


def prompt_budget(model: Any, tokenizer: Any, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit beside `max_new_tokens` new ones in the model's context (None: no limit known)."""
    n = context_length(model, tokenizer)
    return None if n is None else max(1, n - max_new_tokens)


def fit_prompt(ids: list[int], budget: int | None, bos_id: int | None) -> tuple[list[int], int]:
    """(ids cut to `budget` tokens, tokens dropped). The rule: keep the end of the prompt (the question's end and
    the template's answer header), drop from the left, and keep a leading BOS token in place."""
    if budget is None or len(ids) <= budget:
        return ids, 0
    head = ids[:1] if bos_id is not None and ids and ids[0] == bos_id and budget > 1 else []
    kept = head + ids[len(ids) - (budget - len(head)) :]
    return kept, len(ids) - len(kept)


def truncated_counts(
    model: Any, tokenizer: Any, prompts: list[str], *, max_new_tokens: int, add_special_tokens: bool = True
) -> list[int]:
    """Tokens `generate` drops from each prompt to fit the model's context (0 for a prompt that fits)."""
    budget = prompt_budget(model, tokenizer, max_new_tokens)
    if budget is None:
        return [0] * len(prompts)
    ids = tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
    return [max(0, len(row) - budget) for row in ids]


def _model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def left_padded(rows: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """`input_ids` and `attention_mask` of token rows padded on the left to the longest (what the tokenizer's
    `padding=True` with `padding_side="left"` gives for the same rows)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _generate_batch(
    model: Any,
    tokenizer: Any,
    rows: list[list[int]],
    *,
    max_new_tokens: int,
    stop: list[str] | None,
    stopping: Any,
    do_sample: bool,
    gen_kwargs: dict[str, Any],
) -> list[str]:
    enc = left_padded(rows, tokenizer.pad_token_id, _model_device(model))
    width = enc["input_ids"].shape[1]
    from bnr.eval.stopping import StopInNewText

    criteria = [StopInNewText(stopping, width)] if stopping else None
    sampling = {} if do_sample else {"temperature": None, "top_p": None, "top_k": None}
    check = FiniteLogitsCheck()
    gen_kwargs = {**gen_kwargs, "logits_processor": [*gen_kwargs.get("logits_processor", []), check]}
    out = model.generate(
        **enc,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=criteria,
        **sampling,
        **gen_kwargs,
    )
    if not check.passed():
        raise non_finite_logits()
    texts: list[str] = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [trim_at_stop(t, stop) for t in texts]


# generation-config fields that change no greedy token (ids, lengths, sampling knobs greedy ignores): a model whose
# generation config sets anything else (a repetition penalty, banned words, ...) keeps transformers' `generate`
_GREEDY_NEUTRAL = {
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "max_length",
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "output_logits",
    "return_dict_in_generate",
    "transformers_version",
    "_from_model_config",
}


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The token ids that end a row, as `generate` takes them (the generation config's, else the tokenizer's)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}


def plain_greedy(model: Any, do_sample: bool, stop: list[str] | None, gen_kwargs: dict[str, Any]) -> bool:
    """Whether `_generate_until` decodes exactly what `model.generate` would: greedy, no stop strings, no extra
    generation arguments, a transformers model whose generation config adds no logits processor."""
    if do_sample or stop or gen_kwargs or hasattr(model, "complete"):
        return False
    config = getattr(model, "generation_config", None)
    if config is None or not hasattr(model, "forward"):
        return False
    params = inspect.signature(model.forward).parameters
    if "position_ids" not in params or not ({"cache", "past_key_values"} & set(params)):
        return False
    return set(config.to_diff_dict()) <= _GREEDY_NEUTRAL


def _prunable(cache: Any) -> bool:
    """A KV cache whose rows can be dropped: transformers' DynamicCache of full or sliding-window attention layers."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer
    except ImportError:  # pragma: no cover - an older transformers
        return False
    layers: list[Any] = list(getattr(cache, "layers", None) or [])
    return (
        isinstance(cache, DynamicCache)
        and bool(layers)
        and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)
    )


PREFILL_ROWS = 32  # rows per prompt forward pass of `_generate_until`: neighbours in length, so little padding


def _prefill_rows(model: Any, tokenizer: Any, rows: list[list[int]], cache_arg: str) -> tuple[Any, Any, Any, Any]:
    """(last logits, KV cache, attention mask, last position ids) of token `rows` in one left-padded pass."""
    enc = left_padded(rows, tokenizer.pad_token_id, _model_device(model))
    mask = enc["attention_mask"]
    position = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=position, use_cache=True, **keep_last)
    cache = out[cache_arg] if cache_arg in out else out["past_key_values"]
    return out.logits[:, -1].float(), cache, mask, position[:, -1:]


def _prefill(model: Any, tokenizer: Any, rows: list[list[int]], cache_arg: str) -> tuple[Any, Any, Any, Any]:
    """`_prefill_rows` of all `rows` (sorted by length), run `PREFILL_ROWS` at a time with their caches joined into
    one batch, left-padded to the longest: the padding of one pass over all rows can cost as much as the prompts
    themselves. A cache whose layers are not plain `DynamicLayer`s is built in one pass."""
    import torch
    from transformers.cache_utils import DynamicLayer

    parts = [
        _prefill_rows(model, tokenizer, rows[i : i + PREFILL_ROWS], cache_arg)
        for i in range(0, len(rows), PREFILL_ROWS)
    ]
    if len(parts) == 1:
        return parts[0]
    caches = [c for _, c, _, _ in parts]
    if not all(_prunable(c) and all(type(layer) is DynamicLayer for layer in c.layers) for c in caches):
        return _prefill_rows(model, tokenizer, rows, cache_arg)
    width = max(m.shape[1] for _, _, m, _ in parts)

    def left(t: Any, dim: int) -> Any:  # zeros (masked out) on the left of `dim` up to `width`
        shape = list(t.shape)
        shape[dim] = width - t.shape[dim]
        return torch.cat([t.new_zeros(shape), t], dim=dim) if shape[dim] else t

    joined = caches[0]
    for i, layer in enumerate(joined.layers):
        layer.keys = torch.cat([left(c.layers[i].keys, -2) for c in caches], dim=0)
        layer.values = torch.cat([left(c.layers[i].values, -2) for c in caches], dim=0)
    logits = torch.cat([lg for lg, _, _, _ in parts], dim=0)
    mask = torch.cat([left(m, 1) for _, _, m, _ in parts], dim=0)
    position = torch.cat([p for _, _, _, p in parts], dim=0)
    return logits, joined, mask, position


def _generate_until(
    model: Any, tokenizer: Any, rows: list[list[int]], *, max_new_tokens: int, until: Callable[[str], bool]
) -> list[str]:
    """Greedy completions of token `rows` (one left-padded batch), each row ended by an end-of-sequence token,
    by `max_new_tokens`, or as soon as `until(its text so far)` holds; finished rows leave the batch and the KV
    cache. The steps mirror `model.generate` (position ids from the attention mask, the cache, argmax of the last
    logits), so a row's tokens are `generate`'s, cut where `until` first held."""
    import torch

    params = inspect.signature(model.forward).parameters
    cache_arg = "cache" if "cache" in params else "past_key_values"
    logits, cache, mask, position = _prefill(model, tokenizer, rows, cache_arg)
    eos = _eos_ids(model, tokenizer)
    new: list[list[int]] = [[] for _ in rows]
    active = list(range(len(rows)))  # original row of each batch position
    prunable = _prunable(cache)
    check = FiniteLogitsCheck()
    for step in range(max_new_tokens):
        check(None, logits)  # type: ignore[arg-type]
        if not check.passed():
            raise non_finite_logits()
        tokens = logits.argmax(-1)
        keep = []
        for j, token in enumerate(tokens.tolist()):
            if active[j] < 0:  # a finished row still in a cache that cannot drop it
                continue
            row = new[active[j]]
            row.append(token)
            if token in eos or until(tokenizer.decode(row, skip_special_tokens=True)):
                continue
            keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if prunable and len(keep) < len(active):
            index = torch.tensor(keep, device=tokens.device)
            for layer in cache.layers:
                layer.batch_select_indices(index)
            tokens, mask, position = tokens[index], mask[index], position[index]
            active = [active[j] for j in keep]
        elif not prunable:  # keep computing the finished rows (as `generate` does) and ignore their tokens
            alive = set(keep)
            active = [a if j in alive else -1 for j, a in enumerate(active)]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        position = position + 1
        out = model(
            input_ids=tokens[:, None], attention_mask=mask, position_ids=position, use_cache=True, **{cache_arg: cache}
        )
        logits = out.logits[:, -1].float()
    return [str(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    stop: list[str] | None = None,
    do_sample: bool = False,
    add_special_tokens: bool = True,
    progress: bool = True,
    until: Callable[[str], bool] | None = None,
    **gen_kwargs: Any,
) -> list[str]:
    """Completions (new text only, stop strings trimmed) for `prompts`, in input order.

    Greedy unless `do_sample`; extra keyword arguments (temperature, top_p, ...) go to `model.generate`.
    A prompt longer than the model's context minus `max_new_tokens` is cut from the left (`fit_prompt`).
    The tokenizer's padding side is set to left for the call and restored afterwards.
    `until`: the caller's promise that nothing after the first point where `until(text so far)` holds changes
    how it reads a completion; plain greedy decoding (`plain_greedy`) then ends each row there and drops it from
    its batch (`_generate_until`); elsewhere it is ignored and rows run to their end as usual.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    if not prompts:
        return []
    budget, bos = prompt_budget(model, tokenizer, max_new_tokens), getattr(tokenizer, "bos_token_id", None)
    if hasattr(model, "complete"):  # a serving engine (eval.backend=vllm) batches and schedules by itself
        ids = [
            fit_prompt(row, budget, bos)[0]
            for row in tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]
        ]
        texts = model.complete(ids, max_new_tokens=max_new_tokens, stop=stop, do_sample=do_sample, **gen_kwargs)
        return [trim_at_stop(t, stop) for t in texts]
    import torch

    from bnr.eval import stopping as stops

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    ids = tokenizer(prompts, add_special_tokens=add_special_tokens)["input_ids"]  # once: batches pad these rows
    ids = [fit_prompt(row, budget, bos)[0] for row in ids]  # an over-long prompt keeps its end (truncated_counts)
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    stopping = stops.stop_criteria(tokenizer, stop) if stop else None
    early = until is not None and plain_greedy(model, do_sample, stop, gen_kwargs)
    results: list[str] = [""] * len(prompts)
    saved_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), Progress(len(prompts), "generate", unit="prompt", enabled=progress) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                if early:
                    assert until is not None
                    texts = _generate_until(
                        model, tokenizer, [ids[i] for i in idx], max_new_tokens=max_new_tokens, until=until
                    )
                else:
                    texts = _generate_batch(
                        model,
                        tokenizer,
                        [ids[i] for i in idx],
                        max_new_tokens=max_new_tokens,
                        stop=stop,
                        stopping=stopping,
                        do_sample=do_sample,
                        gen_kwargs=gen_kwargs,
                    )
                for i, t in zip(idx, texts):
                    results[i] = t
                bar.update(len(idx))
    finally:
        tokenizer.padding_side = saved_side
        model.train(was_training)
    return results
