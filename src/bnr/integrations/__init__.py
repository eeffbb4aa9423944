"""bnr's defenses as pieces of the user's own training stack (Hugging Face `Trainer`, TRL's `SFTTrainer`).

`bnr.integrations.hf`: the model to train (the base with the defense's frozen adapters, e.g. the BufferLoRA merged,
plus a fresh trainable UserLoRA as a `PeftModel`), the user's data as a prompt/completion `datasets.Dataset`, and
the deliverable made from the trained adapter (bnr's merge, buffer guard and model card). `bnr.integrations.
callbacks`: a `transformers.TrainerCallback` that runs a defense's step hooks. See docs/python.md, "With TRL".
"""
