"""Does a model's representation separate harmful from benign requests? (docs/results.md, "An aligned SmolLM2
base"): a logistic-regression probe on the last prompt token's hidden state of each layer, trained on the
alignment's own training prompts (`refusals` refusing rows vs the Alpaca mix and the safety-flavoured
look-alikes of `benign_instructions`) and scored on the evaluation prompts the attempts are judged on (the first
20 of each `harmful_prompts_eval` source, the first 100 of each `benign_prompts_eval` source). High held-out
accuracy means the boundary is in the model and a fine-tune has only to read it; chance means it must be learned.
With a third argument (comma list of shared files), the harmful training prompts are drawn evenly from those
files instead (`refusals` keeps its refusing rows; `harmful_qa_provider`: the provider's PKU-SafeRLHF / Shadow
prompts, one per distinct prompt). `eval-rest` is the in-distribution control, a diagnostic only: the probe
trains on the rows of the two evaluation files that the evaluation slice leaves out (harmful: after the first 20
of each source; benign: AlpacaEval after its first 100), i.e. on the evaluation's own sources with other
prompts. It measures whether the representation separates the two kinds at all; no base is trained that way.
Usage: python experiments/harm_probe.py MODEL_DIR [N_TRAIN_PER_CLASS [HARMFUL_FILES]]   (BNR_SHARED_DATA must point
at the data)
"""

from __future__ import annotations

import random
import sys

import torch

from bnr.config import DataConfig, ModelConfig
from bnr.data.sources import load_records
from bnr.data.templates import build_prompt
from bnr.eval.safety import first_per_source, load_prompt_set
from bnr.models import load_model_and_tokenizer


@torch.no_grad()
def features(model, tok, records: list) -> torch.Tensor:
    """(n, layers + 1, hidden): the hidden states at the last prompt token, every layer."""
    rows = []
    for r in records:
        enc = tok(build_prompt("chat", r, tok), return_tensors="pt", add_special_tokens=False)
        hs = model(**enc, output_hidden_states=True).hidden_states
        rows.append(torch.stack([h[0, -1] for h in hs]))
    return torch.stack(rows).double()


def probe(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor) -> tuple[float, torch.Tensor]:
    """(train accuracy, held-out per-prompt correctness) of an L2-regularised logistic regression on
    standardised features."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    w = torch.zeros(xtr.shape[1], dtype=xtr.dtype, requires_grad=True)
    b = torch.zeros((), dtype=xtr.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xtr @ w + b, ytr) + 1e-2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        train = float((((xtr @ w + b) > 0).double() == ytr).double().mean())
        return train, ((xte @ w + b) > 0).double() == yte


def harmful_prompts(file: str) -> list:
    """The distinct harmful training prompts of one shared file (refusals: its refusing rows)."""
    records = load_records(DataConfig(source="shared", path=file))
    if file == "refusals":
        records = [r for r in records if r.label == "refusal"]
    return list({r.instruction: r for r in records}.values())


def main(path: str, n: int, files: list[str]) -> None:
    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=path, dtype="float32"))
    rng = random.Random(0)
    all_h = load_prompt_set(DataConfig(source="shared", path="harmful_prompts_eval"))
    all_b = load_prompt_set(DataConfig(source="shared", path="benign_prompts_eval"))
    test_h, test_b = first_per_source(all_h, 20), first_per_source(all_b, 100)
    if files == ["eval-rest"]:
        held = {r.id for r in test_h + test_b}
        train_h = rng.sample([r for r in all_h if r.id not in held], n)
        train_b = rng.sample([r for r in all_b if r.id not in held], n)
    else:
        train_h = [r for f in files for r in rng.sample(harmful_prompts(f), n // len(files))]
        train_b = rng.sample(load_records(DataConfig(source="shared", path="benign_instructions")), n)
    xtr = torch.cat([features(model, tok, train_h), features(model, tok, train_b)])
    xte = torch.cat([features(model, tok, test_h), features(model, tok, test_b)])
    ytr = torch.cat([torch.ones(len(train_h)), torch.zeros(len(train_b))]).double()
    yte = torch.cat([torch.ones(len(test_h)), torch.zeros(len(test_b))]).double()
    print(f"{path}: train {len(ytr)} prompts, held-out {len(yte)} (harmful {len(test_h)}, benign {len(test_b)})")
    sources = [r.source for r in test_h + test_b]
    for layer in range(xtr.shape[1]):
        tr, right = probe(xtr[:, layer], ytr, xte[:, layer], yte)
        h, b = float(right[: len(test_h)].double().mean()), float(right[len(test_h) :].double().mean())
        per = {
            s: float(right[[i for i, x in enumerate(sources) if x == s]].double().mean())
            for s in dict.fromkeys(sources)
        }
        print(
            f"  layer {layer:2d}: probe accuracy train {100 * tr:.1f}%, held-out evaluation prompts "
            f"{100 * float(right.double().mean()):.1f}% (harmful {100 * h:.1f}%, benign {100 * b:.1f}%; "
            + ", ".join(f"{s} {100 * v:.0f}" for s, v in per.items())
            + ")"
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200, (sys.argv[3:] or ["refusals"])[0].split(","))
