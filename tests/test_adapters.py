from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bnr import adapters
from bnr.config import LoraConfig, ModelConfig, TrainConfig
from bnr.data.records import Record
from bnr.data.tokenize import collate, encode_records
from bnr.errors import BnrError
from bnr.models import load_model, load_tokenizer
from bnr.train import train

SPEC = LoraConfig(r=4, alpha=8, dropout=0.1, target_modules=["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"])


def _random_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    model = load_model(ModelConfig(name_or_path=str(model_dir)))
    pm = adapters.add_adapter(model, adapters.BUFFER, SPEC, base_name=str(model_dir))
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    out.mkdir(parents=True, exist_ok=True)
    adapters.save_adapter(pm, adapters.BUFFER, out)
    return out


def _batch(model_dir: Path) -> dict[str, torch.Tensor]:
    tok = load_tokenizer(ModelConfig(name_or_path=str(model_dir)))
    recs = [
        Record(id=str(i), instruction=q, output="hello there") for i, q in enumerate(["say hello", "name a color"])
    ]
    return collate(encode_records(tok, recs, "alpaca", 128), tok.pad_token_id)


def test_merged_and_separate_buffer_give_the_same_logits(tiny_model_dir: Path, tmp_path: Path) -> None:
    buf = _random_adapter(tiny_model_dir, tmp_path / "buf", seed=1)
    batch = _batch(tiny_model_dir)
    merged = adapters.attach_frozen(
        load_model(ModelConfig(name_or_path=str(tiny_model_dir))), buf, adapters.BUFFER, "merged"
    )
    separate = adapters.attach_frozen(
        load_model(ModelConfig(name_or_path=str(tiny_model_dir))), buf, adapters.BUFFER, "separate"
    )
    plain = load_model(ModelConfig(name_or_path=str(tiny_model_dir)))
    for m in (merged, separate, plain):
        m.train()  # dropout of the frozen adapter must be off even in train mode
    with torch.no_grad():
        a = merged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        b = separate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        c = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (a - c).abs().max() > 1e-3  # the buffer really changes the model


def test_set_active_selects_exactly_the_trainable_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    buf = _random_adapter(tiny_model_dir, tmp_path / "buf", seed=2)
    model = adapters.attach_frozen(
        load_model(ModelConfig(name_or_path=str(tiny_model_dir))), buf, adapters.BUFFER, "separate"
    )
    model = adapters.add_adapter(model, adapters.USER, SPEC)
    params = adapters.set_active(model, active=[adapters.BUFFER, adapters.USER], trainable=[adapters.USER])
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(".user." in n and "lora_" in n for n in names)
    assert len(params) == len(names) == 2 * 5 * 2  # A and B, 5 modules, 2 layers
    assert set(model.base_model.active_adapters) == {adapters.BUFFER, adapters.USER}
    with pytest.raises(ValueError):
        adapters.set_active(model, active=[adapters.USER], trainable=[adapters.BUFFER])


def test_frozen_weights_stay_bit_identical_through_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    buf = _random_adapter(tiny_model_dir, tmp_path / "buf", seed=3)
    model = adapters.attach_frozen(
        load_model(ModelConfig(name_or_path=str(tiny_model_dir))), buf, adapters.BUFFER, "separate"
    )
    model = adapters.add_adapter(model, adapters.USER, SPEC)
    adapters.set_active(model, active=[adapters.BUFFER, adapters.USER], trainable=[adapters.USER])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tok = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    recs = [Record(id=str(i), instruction="say hello", output="hello there") for i in range(8)]
    train(
        model,
        encode_records(tok, recs, "alpaca", 128),
        TrainConfig(lr=1e-2, epochs=2, batch_size=4, progress=False),
        seed=0,
        pad_id=0,
    )
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".user." in n for n in changed)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if ".user." not in n)


def test_adapter_from_another_base_is_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    from bnr.tiny import save_model, tiny_llama

    buf = _random_adapter(tiny_model_dir, tmp_path / "buf", seed=4)
    tok = load_tokenizer(ModelConfig(name_or_path=str(tiny_model_dir)))
    other = save_model(tiny_llama(len(tok), hidden=48, intermediate=96), tok, tmp_path / "wide")
    with pytest.raises(BnrError, match="does not fit this base model"):
        adapters.attach_frozen(load_model(ModelConfig(name_or_path=str(other))), buf, adapters.BUFFER, "merged")
    with pytest.raises(BnrError, match="holds no PEFT adapter"):
        adapters.attach_frozen(load_model(ModelConfig(name_or_path=str(other))), tmp_path, adapters.BUFFER, "merged")


@pytest.mark.slow
def test_saved_adapter_config_is_the_same_file_in_every_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    """peft keeps target_modules as a set: its saved order follows the process's string hashing, so without
    sorting the same adapter got another content hash (and stage keys) in each fresh process."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, torch; from pathlib import Path; sys.path.insert(0, sys.argv[3]); "
        "import test_adapters as t; torch.manual_seed(0); t._random_adapter(Path(sys.argv[1]), Path(sys.argv[2]), 0)"
    )
    files = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", code, str(tiny_model_dir), str(out), str(Path(__file__).parent)],
                       check=True, env=env)  # fmt: skip
        files.append((out / "adapter_config.json").read_bytes())
    assert files[0] == files[1]
