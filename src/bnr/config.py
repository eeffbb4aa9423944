"""Typed configuration: dataclasses are the schema; YAML presets and `key.sub=value` overrides fill them in.

This is the only module that knows the config library (dacite). Unknown keys, missing required keys
and wrong types raise a one-line `BnrError` naming the key.

The root `Config` is assembled here from sections that live beside the code they configure where that costs no
heavy import (`bnr.data.config.DataConfig`, `bnr.calibration.CalibrateConfig`; the rest are here, and
docs/architecture.md says why). A plug-in's section (`toy`) is registered by the plug-in (`register_section`)
and resolved when a config is built: core modules never import the plug-in.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dacite
import yaml

from bnr.calibration import CalibrateConfig as CalibrateConfig
from bnr.data.config import DataConfig as DataConfig
from bnr.errors import BnrError
from bnr.locations import output, source

PAPER_TARGETS = ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
# plug-in sections of the root config: name -> dataclass (`register_section`)
SECTIONS: dict[str, type] = {}


@dataclass
class ModelConfig:
    """Base model: hub id or local folder (optionally a GGUF file inside it). `unaligned` is the same model
    before its safety alignment (hub id, folder or `builtin:NAME`), read only by defenses that need the
    aligned - unaligned weight difference (`safelora`, `asft`; the `alignment` provider artifact)."""

    name_or_path: str = ""  # hub id, local folder or builtin:NAME (toy, smollm2)
    revision: str | None = None  # hub revision (branch, tag or commit) to pin
    gguf_file: str | None = None  # GGUF file inside name_or_path to load (de-quantized)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = (
        "float32"  # weights dtype; auto = bf16 on a GPU that has it, else float32
    )
    device: str = "auto"  # cpu, cuda, cuda:1, ...; auto = cuda when available
    gradient_checkpointing: bool = False  # trade compute for memory while training
    quantize: Literal["none", "4bit"] = "none"  # 4bit = bitsandbytes NF4 base (CUDA only; buffer_mode=separate)
    trust_remote_code: bool = False  # allow model code from the hub repo (only for repos you trust)
    unaligned: str | None = None  # the base before safety alignment (SafeLoRA/AsFT alignment direction)


@dataclass
class LoraConfig:
    """LoRA hyper-parameters (paper preset by default: r 32, alpha 64, dropout 0.1, q/v/gate/up/down)."""

    r: int = 32  # LoRA rank
    alpha: int = 64  # LoRA alpha (scaling alpha / r)
    dropout: float = 0.1  # LoRA dropout while training
    target_modules: list[str] = field(
        default_factory=lambda: list(PAPER_TARGETS)
    )  # Linear module names to adapt (comma list)
    rank_pattern: dict[str, int] = field(default_factory=dict)  # per-module rank overrides (peft rank_pattern)
    alpha_pattern: dict[str, int] = field(default_factory=dict)  # per-module alpha overrides (peft alpha_pattern)


@dataclass
class TrainConfig:
    """One training loop's knobs (paper preset: AdamW lr 1e-5, 3 epochs, cosine, warmup 0.05, wd 0.01)."""

    lr: float = 1e-5  # peak learning rate (AdamW)
    epochs: float = 3.0  # passes over the data (fractions allowed)
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    batch_size: int = 8  # micro-batch size
    grad_accum: int = 1  # micro-batches per optimizer step
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # learning-rate schedule after warmup
    warmup_ratio: float = 0.05  # fraction of steps with linear warmup
    weight_decay: float = 0.01  # AdamW weight decay
    max_grad_norm: float | None = 1.0  # gradient clipping norm; null = no clipping
    bf16: bool = False  # bf16 autocast (CPU, or a GPU that supports it)
    save_every: int = 0  # checkpoint every N steps for resume=true (0 = never)
    log_every: int = 10  # a metrics.jsonl record and a progress log line every N steps
    progress: bool = True  # progress bar in a terminal (log lines stay when false)


@dataclass
class SftStage:
    """One LoRA trained by plain SFT on one dataset (`n` samples of it, or all)."""

    data: DataConfig = field(default_factory=DataConfig)
    n: int | None = None  # samples drawn with the seed; null = all
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class BufferStage(SftStage):
    """BufferLoRA: SFT on the provider's harmful set (harmful prompt -> harmful answer)."""

    out: str = output("runs/buffer")  # run directory to write


@dataclass
class RefusalMixStage:
    """A LoRA trained on harmful prompt -> refusal plus benign pairs (ReinforceLoRA, alignment).

    `lookalike_data` (optional, XSTest-style): harmless prompts that sound unsafe, answered normally, trained
    beside the refusal pairs so the LoRA learns what not to refuse (`n_lookalike` of them, or all).
    `conversational` phrases half of the sampled records of every class through fixed conversational
    wrappers, chosen by id hash, so that a prompt's form says nothing about whether to refuse it.
    """

    refusal_data: DataConfig = field(default_factory=DataConfig)
    benign_data: DataConfig = field(default_factory=DataConfig)
    n_refusal: int | None = None  # harmful->refusal samples; null = all
    n_benign: int | None = None  # benign samples; null = all
    lookalike_data: DataConfig | None = None  # harmless prompts that sound unsafe, answered normally
    n_lookalike: int | None = None  # look-alike samples; null = all
    conversational: bool = False  # phrase half of every class's prompts conversationally (bnr.data.phrasing)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class AlignStage(RefusalMixStage):
    """Safety-align a base that does not refuse on its own (e.g. SmolLM2), merged into a full model folder that
    later stages use as `model.name_or_path`. `pipeline` runs it first when `enabled`."""

    enabled: bool = False  # pipeline runs the alignment first
    out: str = output("runs/aligned")  # run directory (a full model) to write
    full: bool = False  # train every weight (full fine-tuning) instead of a LoRA; align.lora is then unused
    max_length: int | None = None  # tokens per alignment example (null: the run-wide max_length)


@dataclass
class ReinforceStage(RefusalMixStage):
    """ReinforceLoRA: trained with the buffer merged and frozen, on harmful->refusal plus benign pairs (and
    optional look-alikes, see `RefusalMixStage`). `with_buffer: false` trains the same LoRA on the plain aligned
    base instead (an ablation: a refusal LoRA that never saw the jailbroken model, merged the same way)."""

    buffer: str = source("runs/buffer")  # the BufferLoRA run to merge in, frozen
    with_buffer: bool = True  # train on top of the merged buffer (the method); false: on the plain base (ablation)
    max_length: int | None = None  # tokens per example of this stage (null: the run-wide max_length)
    out: str = output("runs/reinforce")  # run directory to write


@dataclass
class UserStage:
    """A user job: n samples with harmful ratio p, trained and finalized by a defense (`bnr ls defenses`).

    The defense's options are the top-level section `defenses.<name>` (e.g. `defenses.safeinstruct.ratio=0.1`).
    `final_out` is where the defense's finalize step writes the deliverable (default `<out>-final`); a defense
    whose deliverable is the UserLoRA itself writes nothing there. `alignment` is the run directory of the
    `alignment` provider artifact (aligned - unaligned weights) for the defenses that read it.
    """

    defense: str = "bnr"  # defense registry name (bnr ls defenses)
    attack: str = "harmful-mix"  # the customer's attack (bnr ls attacks); its options: attacks.<name>
    buffer: str = source("runs/buffer")  # the BufferLoRA run (for buffer-using defenses)
    buffer_mode: Literal["merged", "separate"] = (
        "merged"  # attach the buffer merged into the weights or as a frozen adapter
    )
    benign_data: DataConfig = field(default_factory=DataConfig)
    harmful_data: DataConfig = field(default_factory=DataConfig)
    n: int = 1000  # user samples
    p: float = 0.1  # harmful ratio: round(p * n) harmful samples
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = output("runs/user")  # run directory to write
    final_out: str | None = output(None)  # where finalize writes the deliverable (default <out>-final)
    alignment: str = source("runs/alignment")  # the alignment-direction artifact (safelora, asft)


@dataclass
class MergeConfig:
    """QR merge of ReinforceLoRA into UserLoRA (METHOD.md): alpha 0.1, tau 0.01, scale 0.5.

    The merged delta is user_scale * dU + reinforce_scale * (I - alpha Q Q^T) dR; a null strength means `scale`
    (so `scale` alone is the paper's merge). `reinforce_layers` lists the block indices that get dR (null: all);
    modules of other layers get UserLoRA's delta alone.
    """

    user: str = source("runs/user")
    reinforce: str = source("runs/reinforce")
    method: str = "qr"
    alpha: float = 0.1
    tau: float = 0.01
    scale: float = 0.5
    user_scale: float | None = None
    reinforce_scale: float | None = None
    reinforce_layers: list[int] | None = None
    full_model: bool = False
    allow_base_mismatch: bool = False
    out: str = output("runs/merged")


@dataclass
class GuardConfig:
    """The buffer guard (`bnr.guard`, docs/reliability.md) that merge and every export run.

    `no_buffer_registered`: the operator states that this provider has no BufferLoRA, so an empty or missing
    registry is accepted (otherwise merge and exports refuse to run on one: the guard fails closed).
    `max_energy_share`: refuse a candidate that puts at least this share of its energy (squared Frobenius norm)
    inside a buffer's column x row spaces (toy: real adapters 0.00-0.10, an independent buffer 0.19, laundered
    copies of the buffer 1.0). `max_coverage`: refuse one whose own column and row spaces contain at least this
    much of the buffer (by norm) while it puts at least `min_covered_share` of its energy in the buffer's spaces:
    a laundered copy diluted with energy elsewhere still spans the buffer's spaces (1.0) whatever its scale, a real
    low-rank adapter spans little of them (toy 0.06-0.43). docs/reliability.md has the measurements.
    `behavioural` (`auto` | `on` (true) | `off` (false)): the behavioural backstop in merge (`bnr.runs.backstop`):
    the merged candidate and the plain base on a harmful probe (`behavioural_probe`, a benchmark name, or empty for
    the first `behavioural_n` prompts of `buffer.data`), refused when its HS exceeds the base's by more than
    `behavioural_margin` points; `auto` runs it when the base has fewer than `behavioural_max_params` parameters.
    """

    no_buffer_registered: bool = False
    max_energy_share: float = 0.5
    max_coverage: float = 0.9
    min_covered_share: float = 0.02
    behavioural: bool | Literal["auto"] = "auto"  # YAML reads on/off as true/false
    behavioural_max_params: int = 50_000_000
    behavioural_margin: float = 20.0
    behavioural_probe: str = ""
    behavioural_n: int = 50
    behavioural_max_new_tokens: int | None = None  # null: the toy's own length on toy data, else 64

    def __post_init__(self) -> None:
        if not 0 < self.max_energy_share <= 1:
            raise BnrError(f"guard.max_energy_share must be in (0, 1] (got {self.max_energy_share})")
        for name in ("max_coverage", "min_covered_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise BnrError(f"guard.{name} must be in [0, 1] (got {getattr(self, name)})")
        if self.behavioural_n < 1:
            raise BnrError(f"guard.behavioural_n must be >= 1 (got {self.behavioural_n})")


# --- section owned by the evaluation harness (bnr.eval) ---
@dataclass
class EvalConfig:
    """`bnr eval`: a protocol preset (bnr-2026, booster-2024, vaccine-2024, clean) plus overrides.

    `target` is a bnr run directory, a PEFT adapter folder or a model (folder or hub id); empty means the base
    `model.name_or_path`. Empty `judges` / `template` and null numbers mean "the protocol's value".
    """

    target: str = source("")  # run dir, PEFT adapter folder or model; empty = the base
    protocol: str = "clean"  # protocol preset (bnr ls protocols)
    benchmarks: list[str] = field(
        default_factory=lambda: ["harmful", "over-refusal"]
    )  # benchmarks to run (bnr ls benchmarks)
    judges: list[str] = field(default_factory=list)  # judges for harmful benchmarks; empty = the protocol's
    judge_options: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # per-judge options, e.g. judge_options.http.url=...
    data: dict[str, DataConfig] = field(default_factory=dict)  # per-benchmark data override
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-benchmark options
    template: str | None = None  # prompt template; null = the protocol's
    limit: int | None = None  # samples per benchmark; null = all
    max_new_tokens: int | None = None  # generation length; null = the protocol's
    trigger: str = ""  # backdoor trigger appended to harmful prompts
    batch_size: int = 16  # generation batch size
    backend: Literal["hf", "vllm"] = "hf"  # generation engine: transformers, or vLLM (the vllm extra, a GPU)
    cache: str | None = source("runs/eval-cache")  # response cache folder; null = no cache
    progress: bool = True  # progress bar in a terminal
    out: str = output("runs/eval")  # run directory to write


@dataclass
class JobApiConfig:
    """What the provider's fine-tuning job API admits on this base: the bounds of the knobs a customer sets
    (`bnr.orchestrate.JobKnobs`). One policy value read by both sides: the service (`bnr serve`) refuses a job
    outside it (HTTP 400 naming the knob), and `bnr attack-search`'s customer draws only admitted choices (the
    attacker can use only what the API admits). A provider caps a base with its preset or an override, e.g.
    `job_api.max_lr_multiplier=2`."""

    max_epochs: int = 10
    max_batch_size: int = 64
    min_lr_multiplier: float = 0.01
    max_lr_multiplier: float = 10.0

    def bounds(self) -> dict[str, tuple[float, float]]:
        """knob (a `JobKnobs` field) -> (lowest, highest) value admitted."""
        return {
            "n_epochs": (1, self.max_epochs),
            "batch_size": (1, self.max_batch_size),
            "learning_rate_multiplier": (self.min_lr_multiplier, self.max_lr_multiplier),
        }

    def admits(self, knob: str, value: float | None) -> bool:
        """Whether the API admits `value` for `knob` (None: the provider's value, always admitted)."""
        low, high = self.bounds()[knob]
        return value is None or low <= value <= high


@dataclass
class SweepConfig:
    """`bnr sweep`: every cell of the grid = a user job through its defense (train, finalize) + eval.

    The grid is the product of `defenses`, `p`, `n`, `seeds` (shorthand for the axes `user.defense`, `user.p`,
    `user.n`, `seed`) and `axes`: any config key -> its values (`{merge.scale: [0.5, 1.0], buffer.n: [100, 200]}`;
    an axis named like a shorthand replaces it). `providers`: `build` trains the provider artifacts each cell's
    defense needs under `<out>/providers/`, once per distinct provider configuration (with the config's `seed`,
    not the cell's), and shares them; `given` uses the artifacts at the configured paths (user.buffer, ...).

    Each cell runs in `<out>/cells/<defense>-p<p>-n<n>-s<seed>/`; complete stages are skipped, so a killed
    sweep resumes where it stopped. `max_cells` stops after that many newly finished cells (staged runs).
    `fa_benchmark` is the FA column (default: the first of eval.benchmarks that is not a safety benchmark).
    `include_base` also evaluates the base model itself (no fine-tuning) once, as the tables' first row.
    `report` (optional): `report.md` beside the tables, one row per group of cells with the columns it names
    (title -> a registered column, `judge:NAME`, `agreement:NAME` or `BENCHMARK.METRIC`; `bnr.eval.sweep_report`),
    the wall times of every cell and the sweep's cost.

    `launcher`: `local` runs the cells one after another in this process; `ray` sends each shared provider stage
    and each cell to Ray (`bnr.recipes.ray_sweep`; the `ray` extra): a local Ray (`ray_cpus` CPUs) unless
    `ray_address` names a cluster, `cpus_per_cell` / `gpus_per_cell` reserved per task, a failed task retried
    `retries` times, then reported in `sweep.json` while the other cells go on.
    `blocks` (optional): a list of sub-grids, each giving some of defenses / p / n / seeds / axes (the rest as
    above); the grid is their union in order (e.g. every defense at p = 0.1, only sft and bnr at p = 0.5).
    """

    defenses: list[str] = field(default_factory=lambda: ["none", "bnr"])  # defenses to compare
    p: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.5, 1.0])  # harmful ratios
    n: list[int] = field(default_factory=lambda: [1000])  # user dataset sizes
    seeds: list[int] = field(default_factory=lambda: [42, 30, 50])  # seeds per cell
    axes: dict[str, list[Any]] = field(default_factory=dict)  # any config key -> values (grid axes)
    blocks: list[dict[str, Any]] = field(default_factory=list)  # sub-grids whose union is the grid (see docstring)
    providers: Literal["build", "given"] = "build"  # build provider stages per distinct config, or use given paths
    fa_benchmark: str | None = None  # benchmark reported as FA
    max_cells: int | None = None  # stop after this many new cells
    include_base: bool = False  # also evaluate the base model (no fine-tuning): the tables' first row
    report: dict[str, str] = field(default_factory=dict)  # report.md columns: title -> column; empty = none
    plots: bool = True  # write PNG plots
    out: str = output("runs/sweep")  # sweep folder
    launcher: Literal["local", "ray"] = "local"  # local = serial in this process; ray = cells as Ray tasks
    ray_address: str | None = None  # Ray cluster address (ray://host:10001 or auto); null = start a local Ray
    ray_cpus: int | None = None  # CPUs of a local Ray; null = all of this machine's
    cpus_per_cell: float = 1.0  # CPUs Ray reserves for each task (cell or provider stage)
    gpus_per_cell: float = 0.0  # GPUs Ray reserves for each task (fractions share a GPU)
    retries: int = 1  # times a failed Ray task is run again before it is reported


# --- section owned by the gradient analysis (bnr.analysis) ---
@dataclass
class AttackSearchConfig:
    """`bnr attack-search`: an adaptive customer maximising the deliverable's HS over what a job API exposes.

    Per defense in `defenses`, an Optuna study (TPE, seeded) asks for `trials` user jobs (the budget), each a
    choice of the attack and the job knobs below; the provider's defense, artifacts and merge are fixed (the
    rest of the config). The study is stored as SQLite in `<out>/<defense>/study.db`, so a rerun resumes it
    and a larger `trials` extends it. `objective`: `hs` (the plain harmful benchmark) or `hs_max` (the worst
    of every harmful benchmark evaluated: plain, jailbreak framings, trigger, persona).
    """

    defenses: list[str] = field(default_factory=lambda: ["sft", "bnr"])
    trials: int = 8  # user jobs per defense
    attacks: list[str] = field(
        default_factory=lambda: ["harmful-mix", "jailbreak-tune", "backdoor-tune", "identity-shift", "harmful-shift"]
    )
    p: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.5])  # harmful ratios offered
    n: list[int] = field(default_factory=lambda: [500, 1000])  # dataset sizes offered
    epochs: list[float] = field(default_factory=lambda: [1.0, 3.0, 5.0])  # n_epochs offered
    lr_multipliers: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0])  # learning-rate multipliers
    batch_sizes: list[int] = field(default_factory=lambda: [8, 16, 32])  # batch sizes offered
    objective: Literal["hs", "hs_max"] = "hs_max"
    sampler_seed: int = 0  # the TPE sampler's seed
    plots: bool = True  # write search_curve.png
    out: str = output("runs/attack-search")


@dataclass
class AnalyzeCondition:
    """One model state to analyse: the base with adapter folders merged in (in order), plus optionally one
    adapter (`lora`) whose LoRA A/B gradient norms are reported (it is merged for the forward pass, which is
    exactly an active adapter with dropout 0)."""

    name: str = ""
    merge: list[str] = field(default_factory=list)
    lora: str | None = None


@dataclass
class SafetyLoraStage(SftStage):
    """The paper's safety LoRA: refusal data (harmful prompt -> refusal) on the plain aligned model, no buffer."""

    out: str = output("runs/safety")


@dataclass
class LandscapeConfig:
    """Optional 2-D loss-landscape slice (filter-normalised random directions over the analysed modules)."""

    enabled: bool = False
    steps: int = 9
    span: float = 1.0
    n: int = 16


@dataclass
class AnalyzeConfig:
    """`bnr analyze grads`: Safety Gradient Score S_l, damage D_l and gradient norms per layer and module type.

    Conditions: `aligned` (the plain base), `jailbroken` (the `buffer` merged, when set) and any `conditions`.
    Safety directions v = vec(B A): `directions` maps a name to an adapter folder (a safety LoRA run,
    ReinforceLoRA, ...); `train_safety` first trains the paper's safety LoRA (`safety`) as direction `safety`.
    `sign`: `update` scores the update direction -g (default), `gradient` the raw gradient g.
    """

    harmful_data: DataConfig = field(default_factory=DataConfig)
    harmless_data: DataConfig = field(default_factory=DataConfig)
    n: int = 100
    aligned: bool = True
    buffer: str | None = source(None)
    conditions: list[AnalyzeCondition] = field(default_factory=list)
    directions: dict[str, str] = field(default_factory=dict)
    train_safety: bool = False
    safety: SafetyLoraStage = field(default_factory=SafetyLoraStage)
    sign: Literal["update", "gradient"] = "update"
    eps: float = 1e-8
    target_modules: list[str] = field(default_factory=lambda: list(PAPER_TARGETS))
    batch_size: int = 8
    probe_r: int = 32
    probe_alpha: int = 64
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    plots: bool = True
    per_sample: bool = True
    out: str = output("runs/analyze")


@dataclass
class Config:
    """The whole tree; each recipe reads its own section. `pipeline` runs them all."""

    description: str = ""  # free text shown by bnr ls presets
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 42  # the run's one seed (python, numpy, torch, data sampling)
    template: str = "alpaca"  # prompt template (bnr ls templates)
    max_length: int = 512  # tokens per training example (longer are truncated)
    out: str | None = output(None)  # output folder (pipeline root; some commands' run dir)
    overwrite: bool = False  # replace a complete run at out
    resume: bool = False  # continue an interrupted run from its checkpoints
    trackers: list[str] = field(default_factory=list)  # experiment trackers for training metrics: tensorboard, wandb
    align: AlignStage = field(default_factory=AlignStage)
    buffer: BufferStage = field(default_factory=BufferStage)
    reinforce: ReinforceStage = field(default_factory=ReinforceStage)
    user: UserStage = field(default_factory=UserStage)
    merge: MergeConfig = field(default_factory=MergeConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    defenses: dict[str, dict[str, Any]] = field(default_factory=dict)
    attacks: dict[str, dict[str, Any]] = field(default_factory=dict)  # attack options: attacks.<name>.<option>
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    job_api: JobApiConfig = field(default_factory=JobApiConfig)
    attack_search: AttackSearchConfig = field(default_factory=AttackSearchConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    toy: Any = field(default_factory=lambda: plugin_section("toy")(), metadata={"section": "toy"})  # bnr.toy.config


def plugin_section(name: str) -> type:
    """The dataclass a plug-in registered for the root section `name`; the plug-in loader imports the modules
    that register sections (`bnr.plugins.CONFIG_SECTION_MODULES`, light) on the first miss."""
    if name not in SECTIONS:
        from bnr import plugins

        plugins.load_config_sections()
    if name not in SECTIONS:
        raise BnrError(f"config section {name!r} is not registered; its plug-in is not installed")
    return SECTIONS[name]


def register_section(name: str, cls: type) -> None:
    """A plug-in's section of the root config (`toy` -> bnr.toy.config.ToyConfig): `Config` declares the key, the
    plug-in gives its schema when it is imported."""
    SECTIONS[name] = cls


def field_types(cls: type) -> dict[str, Any]:
    """`typing.get_type_hints(cls)` with each plug-in section's registered dataclass in place of `Any`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "section" in f.metadata:
            hints[f.name] = plugin_section(f.metadata["section"])
    return hints


PRESET_PACKAGE = "bnr.configs"


def preset_names() -> list[str]:
    files = importlib.resources.files(PRESET_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in files.iterdir() if p.name.endswith(".yaml"))


def read_yaml(source: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset name (`bnr ls presets`) or a YAML path -> plain dict (following `inherits:`)."""
    path = Path(source)
    here = str(path.resolve()) if path.exists() else source
    if here in _seen:
        chain = " -> ".join([*_seen, here])
        raise BnrError(f"config {source!r} inherits from itself ({chain}); remove the loop from the inherits: keys")
    if source.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise BnrError(
                f"config file {source!r} not found; give a YAML path or a preset ({', '.join(preset_names())})"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise BnrError(f"config {source!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    else:
        res = importlib.resources.files(PRESET_PACKAGE) / f"{source}.yaml"
        if not res.is_file():
            raise BnrError(f"unknown preset {source!r}; valid: {', '.join(preset_names())} (or a YAML path)")
        text = res.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise BnrError(f"config {source!r} is not valid YAML: {yaml_error(e)}") from None
    if not isinstance(data, dict):
        raise BnrError(f"config {source!r} must be a mapping at the top level")
    inherits = data.pop("inherits", None)
    if inherits:
        if not isinstance(inherits, str):
            raise BnrError(f"config {source!r}: inherits: must be one preset name or YAML path (got {inherits!r})")
        parent = inherits
        if not Path(parent).is_absolute() and path.is_file() and (path.parent / parent).is_file():
            parent = str(path.parent / parent)
        return deep_merge(read_yaml(parent, (*_seen, here)), data)
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if (
            isinstance(v, dict)
            and isinstance(out.get(k), dict)
            and k not in ("fields", "rank_pattern", "alpha_pattern", "report")
        ):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(items: list[str], aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """`a.b=value` strings -> nested dict; values are parsed as YAML scalars/lists (`x=[1,2]`, `y=null`)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise BnrError(f"override {item!r} is not key=value (e.g. user.p=0.1)")
        key, raw = item.split("=", 1)
        key = (aliases or {}).get(key, key)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise BnrError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return out


# keys that were removed, with where their meaning lives now (shown in the unknown-key error); plug-ins add theirs
MOVED_KEYS = {
    "ps": "p (sweep.p)",
    "task": "user.benign_data.path=benign_<task> and eval.benchmarks=[toy-harmful,toy-over-refusal,toy-<task>]",
}


def _normalise(cls: type, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Reject unknown keys with their full dotted path; accept `a,b` for list[str] fields."""
    hints = field_types(cls)
    out = dict(data)
    sections = {f.name for f in dataclasses.fields(cls) if "section" in f.metadata}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in hints:
            if path in MOVED_KEYS:
                raise BnrError(f"unknown config key {path!r}: it was removed; use {MOVED_KEYS[path]}")
            valid = ", ".join(f.name for f in dataclasses.fields(cls)) or "none (this section takes no keys)"
            raise BnrError(f"unknown config key {path!r}; valid keys here: {valid}")
        hint = _optional_inner(hints[key])
        if key in sections:  # a plug-in's section (typed Any in the schema): built here with its own dataclass
            if not isinstance(value, dict):
                raise BnrError(f"config key {path!r} has a wrong type: got {value!r}, expected {_type_name(hint)}")
            out[key] = parse_section(hint, value, path + ".")
        elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
            out[key] = _normalise(hint, value, path + ".")  # type: ignore[arg-type]
        elif hint == list[str] and isinstance(value, str):
            out[key] = [v.strip() for v in value.split(",") if v.strip()]
    return out


def _optional_inner(hint: Any) -> Any:
    """`X | None` -> X (so optional sub-sections are checked key by key too); other hints unchanged."""
    args = typing.get_args(hint)
    if len(args) == 2 and type(None) in args:
        return next(a for a in args if a is not type(None))
    return hint


def yaml_error(e: yaml.YAMLError) -> str:
    """A YAML error in one line with where it is (line and column, 1-based), e.g. `expected ',' or ']', but got
    '<stream end>' (line 3, column 9)`."""

    def at(mark: Any) -> str:
        return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""

    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    opened = f"{context}{at(getattr(e, 'context_mark', None))}: " if context else ""
    return f"{opened}{problem}{at(getattr(e, 'problem_mark', None))}"


def from_dict(data: dict[str, Any]) -> Config:
    """Validate a plain dict against the schema; errors name the offending key."""
    cfg = parse_section(Config, data)
    validate(cfg)
    return cfg


S = typing.TypeVar("S")


def parse_section(cls: type[S], data: dict[str, Any], where: str = "") -> S:
    """Build dataclass `cls` from a plain dict with the root config's rules (unknown keys are errors naming
    the key, with `where` as the dotted prefix). Plug-ins use it for sections they own (defense options)."""
    if not isinstance(data, dict):
        raise BnrError(f"config key {where.rstrip('.')!r} must be a mapping (got {data!r})")
    data = _normalise(cls, data, where)
    try:
        return dacite.from_dict(cls, data, config=dacite.Config(strict=True, cast=[], type_hooks={float: _to_float}))
    except dacite.UnexpectedDataError as e:
        keys = ", ".join(sorted(where + k for k in e.keys))
        raise BnrError(f"unknown config key(s): {keys}; see `bnr validate` or the presets for valid keys") from None
    except dacite.WrongTypeError as e:
        key = where + str(e.field_path)
        choices = _literal_values(e.field_type)
        if choices:
            raise BnrError(f"config key {key!r} is {e.value!r}; valid: {', '.join(map(str, choices))}") from None
        raise BnrError(
            f"config key {key!r} has a wrong type: got {e.value!r}, expected {_type_name(e.field_type)}"
        ) from None
    except dacite.MissingValueError as e:
        raise BnrError(f"config key {where + str(e.field_path)!r} is missing") from None
    except dacite.DaciteError as e:
        raise BnrError(f"invalid config: {e}") from None


# checks that plug-ins add for the sections they own (e.g. `defenses.<name>`); run by `validate` after the
# built-in range checks, so a bad plug-in option fails at load time like any other key
VALIDATORS: list[typing.Callable[[Config], None]] = []


def register_validator(fn: typing.Callable[[Config], None]) -> typing.Callable[[Config], None]:
    """Add a whole-config check (used as a decorator by plug-in packages when they are imported)."""
    VALIDATORS.append(fn)
    return fn


def _to_float(v: Any) -> Any:
    """ints and YAML 1.1 strings such as '5e-3' are floats too."""
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _literal_values(t: Any) -> list[Any]:
    """The values a `Literal[...]` (or `Literal[...] | None`) allows; [] for any other type."""
    if typing.get_origin(t) is Literal:
        return list(typing.get_args(t))
    return [v for arg in typing.get_args(t) if typing.get_origin(arg) is Literal for v in typing.get_args(arg)]


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) or str(t).replace("typing.", "")


# the short override keys of a user job (as `bnr finetune` and `bnr validate` take them)
USER_ALIASES = {"p": "user.p", "n": "user.n", "defense": "user.defense"}


def load_config(
    source: str | None, overrides: list[str] | None = None, aliases: dict[str, str] | None = None
) -> Config:
    """Preset name or YAML path (or None for defaults) + overrides -> validated `Config`. `aliases` maps short
    override keys to full ones (default `USER_ALIASES`: `p=0.1` is `user.p=0.1`)."""
    data = read_yaml(source) if source else {}
    data = deep_merge(data, parse_overrides(overrides or [], USER_ALIASES if aliases is None else aliases))
    return from_dict(data)


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# libyaml's C emitter and parser when PyYAML was built with them: the same text and data as the pure-Python
# SafeDumper / SafeLoader (same resolver and constructor), 4-7x faster; every run writes a config.yaml and every
# model card reads one back (~60 of each in `bnr demo`).
FAST_SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
FAST_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def to_yaml(cfg: Config) -> str:
    return yaml.dump(to_dict(cfg), Dumper=FAST_SAFE_DUMPER, sort_keys=False)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise BnrError(msg)


def _validate_train(t: TrainConfig, where: str) -> None:
    _check(t.lr > 0, f"{where}.lr must be > 0 (got {t.lr})")
    _check(t.epochs > 0 or (t.max_steps or 0) > 0, f"{where}.epochs must be > 0 (got {t.epochs})")
    _check(t.batch_size >= 1, f"{where}.batch_size must be >= 1 (got {t.batch_size})")
    _check(t.grad_accum >= 1, f"{where}.grad_accum must be >= 1 (got {t.grad_accum})")
    _check(0 <= t.warmup_ratio < 1, f"{where}.warmup_ratio must be in [0, 1) (got {t.warmup_ratio})")
    _check(t.weight_decay >= 0, f"{where}.weight_decay must be >= 0 (got {t.weight_decay})")
    _check(t.max_grad_norm is None or t.max_grad_norm > 0, f"{where}.max_grad_norm must be > 0 or null")
    _check(t.save_every >= 0, f"{where}.save_every must be >= 0 (got {t.save_every})")


def _validate_lora(lc: LoraConfig, where: str) -> None:
    _check(lc.r >= 1, f"{where}.r must be >= 1 (got {lc.r})")
    _check(lc.alpha > 0, f"{where}.alpha must be > 0 (got {lc.alpha})")
    _check(0 <= lc.dropout < 1, f"{where}.dropout must be in [0, 1) (got {lc.dropout})")
    _check(len(lc.target_modules) > 0, f"{where}.target_modules must name at least one module")


def _check_finite(node: Any, prefix: str = "") -> None:
    """Every float in the config tree is a finite number (YAML reads `inf` and `.nan` as floats)."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{prefix}{f.name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise BnrError(f"config key {prefix + f.name!r} is {value}; give a finite number")
        elif isinstance(value, list) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise BnrError(f"config key {prefix + f.name!r} holds a non-finite number ({value}); give finite numbers")


def validate(cfg: Config) -> None:
    """Range checks that the type schema cannot express."""
    _check_finite(cfg)
    _check(cfg.max_length >= 8, f"max_length must be >= 8 (got {cfg.max_length})")
    for stage in (cfg.align, cfg.reinforce):
        _check(
            stage.max_length is None or stage.max_length >= 8,
            "align.max_length and reinforce.max_length must be >= 8 or null",
        )
    _check(0.0 <= cfg.user.p <= 1.0, f"user.p must be in [0, 1] (got {cfg.user.p}); it is the harmful ratio")
    _check(cfg.user.n >= 1, f"user.n must be >= 1 (got {cfg.user.n})")
    for name in ("align", "buffer", "reinforce", "user"):
        stage = getattr(cfg, name)
        _validate_train(stage.train, f"{name}.train")
        _validate_lora(stage.lora, f"{name}.lora")
    m = cfg.merge
    _check(0.0 <= m.alpha <= 1.0, f"merge.alpha must be in [0, 1] (got {m.alpha})")
    _check(0.0 <= m.tau < 1.0, f"merge.tau must be in [0, 1) (got {m.tau})")
    _check(m.scale > 0, f"merge.scale must be > 0 (got {m.scale})")
    _check(m.user_scale is None or m.user_scale >= 0, f"merge.user_scale must be >= 0 or null (got {m.user_scale})")
    _check(
        m.reinforce_scale is None or m.reinforce_scale >= 0,
        f"merge.reinforce_scale must be >= 0 or null (got {m.reinforce_scale})",
    )
    _validate_calibrate(cfg.calibrate)
    j = cfg.job_api
    _check(j.max_epochs >= 1 and j.max_batch_size >= 1, "job_api.max_epochs and job_api.max_batch_size must be >= 1")
    _check(
        0 < j.min_lr_multiplier <= j.max_lr_multiplier,
        f"job_api.min_lr_multiplier must be > 0 and <= job_api.max_lr_multiplier (got {j.min_lr_multiplier}, "
        f"{j.max_lr_multiplier})",
    )
    mnt = cfg.eval.max_new_tokens
    _check(mnt is None or mnt >= 1, f"eval.max_new_tokens must be >= 1, or null for the protocol's (got {mnt})")
    for check in VALIDATORS:
        check(cfg)
    _check(
        m.reinforce_layers is None or all(i >= 0 for i in m.reinforce_layers),
        f"merge.reinforce_layers must list layer indices >= 0, or be null for all layers (got {m.reinforce_layers})",
    )


def _validate_calibrate(c: CalibrateConfig) -> None:
    _check(c.fa_n >= 1, f"calibrate.fa_n must be >= 1 (got {c.fa_n})")
    _check(all(x > 0 for x in c.user_scales), f"calibrate.user_scales must be > 0 (got {c.user_scales})")
    _check(
        all(x >= 0 for x in c.reinforce_scales), f"calibrate.reinforce_scales must be >= 0 (got {c.reinforce_scales})"
    )
    _check(all(0 <= a <= 1 for a in c.alphas), f"calibrate.alphas must be in [0, 1] (got {c.alphas})")
    _check(
        all(lay is None or all(i >= 0 for i in lay) for lay in c.layers),
        f"calibrate.layers entries must be lists of layer indices >= 0 or null (got {c.layers})",
    )
    _check(c.fa_delta >= 0 and c.hs_margin >= 0, "calibrate.fa_delta and calibrate.hs_margin must be >= 0")
    _check(
        c.over_refusal_tolerance is None or c.over_refusal_tolerance >= 0,
        "calibrate.over_refusal_tolerance must be >= 0 (points), or null for one standard error",
    )
    _check(c.batch_size >= 1, f"calibrate.batch_size must be >= 1 (got {c.batch_size})")
    _check(
        c.screen_fraction is None or 0 < c.screen_fraction < 1,
        f"calibrate.screen_fraction must be in (0, 1) or null (got {c.screen_fraction})",
    )
    _check(c.keep >= 1, f"calibrate.keep must be >= 1 (got {c.keep})")
