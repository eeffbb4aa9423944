"""bnr: Buffer-and-Reinforce safe fine-tuning for LLMs (temporary jailbreaking as a defense)."""

__version__ = "0.1.0"
