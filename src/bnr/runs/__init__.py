"""The run-record layer, between the components and the plug-ins: how a stage becomes a run directory.

- `writer`: `RunWriter`, one run directory written atomically, its metrics log and checkpoints folder;
- `opening`: `open_run` (open, check a resume, seed), parent checks, the provenance every manifest records;
- `keys`: stage keys and content hashes, so a stage is reused only while its inputs are unchanged;
- `providers`: the registry of provider artifacts (buffer, reinforce, ...) that defenses declare by name;
- `fit`: the shared fit helper (sample data, run the loop with checkpoints) and the plain-SFT LoRA stage;
- `merge`: a merge run (UserLoRA + ReinforceLoRA -> a servable adapter).

Defenses import only components and this layer; nothing here imports a plug-in, the orchestration layer or a
recipe (tests/test_layers.py).
"""
