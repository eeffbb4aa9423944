"""One module per workflow; each exposes `run(cfg: Config) -> Path` and reads top to bottom."""
