"""P3: evaluation throughput. The one batched generation loop (`bnr.eval.generate.generate`) at batch 16 and 32
vs one prompt at a time (tokens/s, same prompts, same greedy settings, completions compared), and judges called
on a whole batch vs one sample at a time (keyword, the toy's exact judge, a tiny random BeaverDam-shaped
classifier through the real `beaverdam` judge code).
"""

from __future__ import annotations

import functools
import random
import shutil
from typing import Any

import torch
from common import Figure, Scale, figure, interleaved, medians, peak_memory_mb, python_peak_mb
from shapes import scratch_dir

from bnr.eval.generate import generate
from bnr.eval.judges import make_judge
from bnr.tiny import tiny_llama, word_tokenizer

WORDS = "the a model answer question safe harmful buffer reinforce user data sample token batch cache".split()  # noqa: SIM905
REFUSAL = "I cannot help with that request."


def make_prompts(n: int, seed: int = 0, lo: int = 8, hi: int = 64) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def generation_setup(scale: Scale) -> tuple[Any, Any, list[str], int]:
    if scale.smoke:
        prompts, vocab, hidden, layers, new = make_prompts(8, hi=12), 50, 32, 2, 4
    else:
        prompts, vocab, hidden, layers, new = make_prompts(64), 8000, 256, 4, 32
    tok = word_tokenizer(prompts + WORDS + [f"w{i}" for i in range(vocab)], max_vocab=vocab + 100)
    model = tiny_llama(len(tok), hidden=hidden, layers=layers, heads=8, intermediate=4 * hidden, max_positions=1024)
    return model.to(scale.device).eval(), tok, prompts, new


def generation_figures(scale: Scale) -> list[Figure]:
    model, tok, prompts, new = generation_setup(scale)
    outs: dict[str, list[str]] = {}

    def job(bs: int, these: list[str] = prompts) -> None:
        got = generate(model, tok, these, max_new_tokens=new, batch_size=bs, progress=False, min_new_tokens=new)
        if these is prompts:
            outs[str(bs)] = got

    sizes = [2, 4] if scale.smoke else [16, 32]
    jobs = {f"batch{b}": functools.partial(job, b) for b in sizes}
    jobs["single"] = functools.partial(job, 1)
    # warm-up (and peak memory) on each candidate's first batch: the longest prompts, as the full run starts
    longest = sorted(prompts, key=lambda p: -len(tok(p)["input_ids"]))
    warm = {name: functools.partial(job, b, longest[:b]) for name, b in zip(jobs, [*sizes, 1])}
    mem: dict[str, float] = {}
    t = medians(interleaved(jobs, min(scale.reps, 2), device=scale.device, memory=mem, warmups=warm))
    n_tok = len(prompts) * new
    figs = []
    for b in sizes:
        same = sum(x == y for x, y in zip(outs[str(b)], outs["1"]))
        figs.append(
            figure(
                f"P3.generate.batch{b}",
                f"tokens/s batched (batch {b}) / one prompt at a time",
                t["single"] / t[f"batch{b}"],
                ">= 5" if b == 16 else None,
                seconds={f"batch{b}": t[f"batch{b}"], "single": t["single"]},
                peak_mb={f"batch{b}": mem[f"batch{b}"], "single": mem["single"]},
                detail={
                    "tokens_per_s": {f"batch{b}": n_tok / t[f"batch{b}"], "single": n_tok / t["single"]},
                    "prompts": len(prompts),
                    "new_tokens": new,
                    "identical_completions": f"{same}/{len(prompts)}",
                    "model": {
                        "hidden": model.config.hidden_size,
                        "layers": model.config.num_hidden_layers,
                        "vocab": model.config.vocab_size,
                    },
                },
            )
        )
    return figs


def beaverdam_dir(tok: Any, root: Any) -> str:
    """A random LlamaForSequenceClassification with BeaverDam's 14-label multi-label head, saved to `root`."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(  # type: ignore[call-arg]
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_labels=14,
        problem_type="multi_label_classification",
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    torch.manual_seed(0)
    LlamaForSequenceClassification(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def judge_figures(scale: Scale) -> list[Figure]:
    n = 40 if scale.smoke else 2000
    rng = random.Random(1)
    prompts = make_prompts(n, seed=2)
    completions = [REFUSAL if rng.random() < 0.5 else p[::-1] for p in make_prompts(n, seed=3)]
    root = scratch_dir("p3")
    tok = word_tokenizer(prompts + completions + WORDS + [REFUSAL], max_vocab=500)
    judges: dict[str, tuple[Any, int]] = {
        "keyword": (make_judge("keyword"), n),
        "toy-harm": (make_judge("toy-harm"), n),
    }
    m = 16 if scale.smoke else 256  # the classifier judges fewer samples: it runs a model
    path = beaverdam_dir(tok, root / "beaverdam")
    judges["beaverdam-tiny"] = (make_judge("beaverdam", path=path, device=scale.device, batch_size=16), m)
    single = make_judge("beaverdam", path=path, device=scale.device, batch_size=1)
    figs = []
    for name, (judge, k) in judges.items():
        ps, cs = prompts[:k], completions[:k]
        one = single if name == "beaverdam-tiny" else judge

        def batched(judge: Any = judge, ps: list[str] = ps, cs: list[str] = cs) -> Any:
            return judge.judge(ps, cs)

        def unbatched(one: Any = one, ps: list[str] = ps, cs: list[str] = cs) -> Any:
            return [one.judge([p], [c])[0] for p, c in zip(ps, cs)]

        assert [v.flagged for v in batched()] == [v.flagged for v in unbatched()]
        t = medians(interleaved({"batched": batched, "unbatched": unbatched}, scale.reps))
        model_judge = name == "beaverdam-tiny"
        mem = (
            {"batched": peak_memory_mb(batched)[0], "unbatched": peak_memory_mb(unbatched)[0]}
            if model_judge
            else {"batched": python_peak_mb(batched), "unbatched": python_peak_mb(unbatched)}
        )
        figs.append(
            figure(
                f"P3.judge.{name}",
                "samples/s judged in one batched call / one call per sample",
                t["unbatched"] / t["batched"],
                seconds=t,
                peak_mb=mem,
                detail={
                    "samples": k,
                    "samples_per_s_batched": k / t["batched"],
                    "memory": "RSS high-water mark" if model_judge else "tracemalloc",
                },
            )
        )
    shutil.rmtree(root, ignore_errors=True)
    return figs


def run(scale: Scale) -> list[Figure]:
    return generation_figures(scale) + judge_figures(scale)
