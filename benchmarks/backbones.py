"""Train and decision speed of the denoiser backbones (temporal U-Net, DiT, residual MLP) on CPU.

Run from the repository root:

    .venv/bin/python benchmarks/backbones.py                      # everything, default repeats
    .venv/bin/python benchmarks/backbones.py --only unet --sizes nav1d --repeats 1
    .venv/bin/python benchmarks/backbones.py --json benchmarks/results-cpu.json --threads 2

For every backbone at two sizes ("nav1d", the shapes of the repo's params.yaml, and "paper", the
shapes of the papers the backbones come from) it measures:

- train steps/s: one step draws a batch of 256 (x0 standard normal of the model's sample shape,
  and a standard-normal condition if the model has one), computes
  `build_formulation("ddpm", num_steps=20).loss(net, x0, cond, generator).mean()`, back-propagates
  and takes an AdamW step. After 3 warm-up steps, the median over `--repeats` blocks of
  `--block` steps (steps / block wall time);
- decision latency: one control decision for 64 episodes x 16 candidates = 1024 samples with 10
  DDIM steps, `build_formulation("ddim", num_steps=20, sample_steps=10).sample(net,
  (1024, H, D), cond, generator, record=False)` under `torch.no_grad()`, the 64 episodes'
  conditions tiled to 1024 rows. After 1 warm-up decision, the median of `--repeats`.

It prints a Markdown table of our measurements, then, separately, the peer reference numbers the
project compares against (CleanDiffuser main @ 05f17fc on this CPU, its own networks, 2
threads; those are quoted, not measured here). Numbers vary 10-25% between runs on a shared VM:
compare only rows taken in one run, and never assert them in tests.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dmc_core.diffusion import build_formulation
from dmc_core.nets import BACKBONES, build_backbone

TRAIN_BATCH = 256
EPISODES, CANDIDATES = 64, 16
DECISION_BATCH = EPISODES * CANDIDATES
DIFFUSION_STEPS, DDIM_STEPS = 20, 10
TRAIN_WARMUP, DECISION_WARMUP = 3, 1
LEARNING_RATE = 1e-3
SIZES = ("nav1d", "paper")


@dataclass(frozen=True)
class Config:
    """One backbone at one size: the sample shape (H, D), the condition width C and its sizes."""

    backbone: str
    size: str
    horizon: int
    transition_dim: int
    cond_dim: int
    sizes: dict[str, Any]
    source: str


# (backbone, size) -> configuration. "nav1d" rows follow params.yaml (pretrain.models); "paper"
# rows follow the publications the backbones reproduce.
CONFIGS: tuple[Config, ...] = (
    # Diffuser on Nav1D (params.yaml pretrain.models.diffuser): H 8, state 2 + action 1.
    Config("unet", "nav1d", 8, 3, 0, {"dim": 16, "dim_mults": (1, 2)}, "params.yaml diffuser"),
    # Diffusion Policy on Nav1D (params.yaml pretrain.models.policy): chunk 4 of 1-D actions,
    # conditioned on To = 2 observations of width 2.
    Config("mlp", "nav1d", 4, 1, 4, {"hidden": 128, "blocks": 2}, "params.yaml policy"),
    # The same policy shape with the DiT backbone (default DiT sizes).
    Config("dit", "nav1d", 4, 1, 4, {"d_model": 128, "depth": 2, "heads": 4}, "params.yaml policy"),
    # Janner et al. (2022), Diffuser on hopper: H 32, state 11 + action 3, widths 32..256.
    Config(
        "unet",
        "paper",
        32,
        14,
        0,
        {"dim": 32, "dim_mults": (1, 2, 4, 8)},
        "Janner et al. 2022 hopper",
    ),
    # Chi et al. (2023), transformer Diffusion Policy (low-dim): Hp 16 of 2-D actions,
    # To = 2 observations of width 20, d_model 256, 8 layers, 4 heads.
    Config(
        "dit",
        "paper",
        16,
        2,
        2 * 20,
        {"d_model": 256, "depth": 8, "heads": 4},
        "Chi et al. 2023 transformer",
    ),
    # Hansen-Estruch et al. (2023), IDQL's residual MLP policy on hopper: one 3-D action given
    # the 11-D observation, 3 blocks of width 256 (expansion 4: 1024 inside).
    Config("mlp", "paper", 1, 3, 11, {"hidden": 256, "blocks": 3}, "IDQL hopper"),
)


@dataclass(frozen=True)
class Reference:
    """A peer measurement: CleanDiffuser main @ 05f17fc on this CPU (not measured here)."""

    network: str
    shape: str
    widths: str
    params: str
    train_steps_per_s: float
    decision_ms: float


# CleanDiffuser (main @ 05f17fc), its own networks and DiscreteDiffusionSDE, T = 20, on this 2-core
# CPU with torch 2.13.0 and 2 threads; same definition of a train step (batch 256) and of a
# decision (1024 samples x 10 DDIM steps); medians of 3 quiet runs.
# Source: CleanDiffuser main @ 05f17fc on this 2-core CPU, torch 2.13.0, medians of 3 quiet runs.
REFERENCES: tuple[Reference, ...] = (
    Reference("temporal U-Net", "16 × 3", "32/64/128, kernel 5", "1.0M", 10.6, 955),
    Reference("temporal U-Net (Diffuser hopper)", "32 × 14", "32/64/128/256", "4.0M", 4.1, 2713),
    Reference("DiT", "16 × 3", "d 128, depth 2, 4 heads", "0.68M", 12.2, 1481),
    Reference("DiT (CleanDiffuser DD)", "32 × 11", "d 320, depth 2, 10 heads", "4.1M", 1.5, 11296),
    Reference("IDQL residual MLP", "1 × 3, obs 2", "3 blocks of 256 (1024 in)", "1.6M", 49, 228),
)
REFERENCE_SOURCE = "CleanDiffuser main @ 05f17fc, measured on this CPU (medians of 3 quiet runs)"


@dataclass(frozen=True)
class Result(Config):
    """What one configuration measured: medians over the repeats and every repeat's value."""

    params: int
    train_steps_per_s: float
    decision_ms: float
    train_repeats: list[float]
    decision_repeats: list[float]


def _count_params(net: nn.Module) -> int:
    """The number of trainable scalars in `net`."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def _draw_cond(rows: int, cond_dim: int, generator: torch.Generator) -> Tensor | None:
    """A (rows, cond_dim) standard-normal condition, or None for an unconditioned model."""
    if cond_dim == 0:
        return None
    return torch.randn(rows, cond_dim, generator=generator)


def measure_train(config: Config, net: nn.Module, repeats: int, block: int) -> list[float]:
    """Steps per second of `repeats` blocks of `block` DDPM training steps, after a warm-up."""
    formulation = build_formulation("ddpm", num_steps=DIFFUSION_STEPS)
    optimizer = torch.optim.AdamW(net.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(1)
    shape = (TRAIN_BATCH, config.horizon, config.transition_dim)
    net.train()

    def step() -> None:
        x0 = torch.randn(shape, generator=generator)
        cond = _draw_cond(TRAIN_BATCH, config.cond_dim, generator)
        loss = formulation.loss(net, x0, cond, generator).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(TRAIN_WARMUP):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(block):
            step()
        rates.append(block / (time.perf_counter() - start))
    return rates


def measure_decision(config: Config, net: nn.Module, repeats: int) -> list[float]:
    """Milliseconds of `repeats` decisions (1024 samples, 10 DDIM steps), after a warm-up."""
    formulation = build_formulation("ddim", num_steps=DIFFUSION_STEPS, sample_steps=DDIM_STEPS)
    generator = torch.Generator().manual_seed(2)
    shape = (DECISION_BATCH, config.horizon, config.transition_dim)
    episode_cond = _draw_cond(EPISODES, config.cond_dim, generator)
    cond = None if episode_cond is None else episode_cond.repeat_interleave(CANDIDATES, dim=0)
    net.eval()

    def decide() -> None:
        with torch.no_grad():
            formulation.sample(net, shape, cond, generator, record=False)

    for _ in range(DECISION_WARMUP):
        decide()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        decide()
        times.append(1000.0 * (time.perf_counter() - start))
    return times


def run_config(config: Config, repeats: int, block: int) -> Result:
    """Build the backbone of `config` (seed 0) and measure its train speed and decision latency."""
    torch.manual_seed(0)
    net = build_backbone(
        config.backbone,
        horizon=config.horizon,
        transition_dim=config.transition_dim,
        cond_dim=config.cond_dim,
        **config.sizes,
    )
    train = measure_train(config, net, repeats, block)
    decision = measure_decision(config, net, repeats)
    plain_sizes = {k: list(v) if isinstance(v, tuple) else v for k, v in config.sizes.items()}
    return Result(
        **(asdict(config) | {"sizes": plain_sizes}),
        params=_count_params(net),
        train_steps_per_s=statistics.median(train),
        decision_ms=statistics.median(decision),
        train_repeats=train,
        decision_repeats=decision,
    )


def _format_params(n: int) -> str:
    """A parameter count as 1.23M or 45.6k."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _format_rate(value: float) -> str:
    """Three significant figures, never in scientific notation."""
    return f"{value:.3g}" if value < 1000 else f"{value:.0f}"


def results_table(results: list[Result]) -> str:
    """Our measurements as a Markdown table."""
    lines = [
        "| backbone | size | shape (H × D, cond) | params | train steps/s "
        f"| decision ms ({DECISION_BATCH} × {DDIM_STEPS} DDIM) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        shape = f"{r.horizon} × {r.transition_dim}, cond {r.cond_dim or 'none'}"
        lines.append(
            f"| {r.backbone} | {r.size} | {shape} | {_format_params(r.params)} "
            f"| {_format_rate(r.train_steps_per_s)} | {_format_rate(r.decision_ms)} |"
        )
    return "\n".join(lines)


def reference_table() -> str:
    """The quoted peer measurements as a Markdown table."""
    lines = [
        "| network | shape (H × D) | widths | params | train steps/s "
        f"| decision ms ({DECISION_BATCH} × {DDIM_STEPS} DDIM) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for ref in REFERENCES:
        lines.append(
            f"| {ref.network} | {ref.shape} | {ref.widths} | {ref.params} "
            f"| {ref.train_steps_per_s:g} | {ref.decision_ms:g} |"
        )
    return "\n".join(lines)


def _csv_choice(text: str, known: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """Split a comma-separated flag value and check every item is one of `known`."""
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    bad = [item for item in items if item not in known]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"{flag} takes a comma-separated subset of {','.join(known)}, got {text!r}"
        )
    return items


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats per measurement (median reported)"
    )
    parser.add_argument(
        "--block", type=int, default=10, help="training steps per timed repeat (default 10)"
    )
    parser.add_argument(
        "--only",
        type=lambda s: _csv_choice(s, tuple(BACKBONES), "--only"),
        default=tuple(BACKBONES),
        help="comma-separated backbones to measure (default: unet,dit,mlp)",
    )
    parser.add_argument(
        "--sizes",
        type=lambda s: _csv_choice(s, SIZES, "--sizes"),
        default=SIZES,
        help="comma-separated sizes to measure (default: nav1d,paper)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.block < 1:
        parser.error("--repeats and --block must be >= 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    """Measure the selected configurations, print the tables and optionally write JSON."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    configs = [c for c in CONFIGS if c.backbone in args.only and c.size in args.sizes]

    started = time.perf_counter()
    results = []
    for config in configs:
        print(f"measuring {config.backbone} at {config.size} ...", file=sys.stderr, flush=True)
        results.append(run_config(config, args.repeats, args.block))
    wall_s = time.perf_counter() - started

    print(
        f"# Backbone speed on CPU (torch {torch.__version__}, {threads} threads, "
        f"{platform.processor() or platform.machine()})\n"
    )
    print(
        f"Train: batch {TRAIN_BATCH}, DDPM T = {DIFFUSION_STEPS}, AdamW; median of "
        f"{args.repeats} blocks of {args.block} steps after {TRAIN_WARMUP} warm-up steps. "
        f"Decision: {EPISODES} episodes × {CANDIDATES} candidates, {DDIM_STEPS} DDIM steps, "
        f"no grad; median of {args.repeats} after {DECISION_WARMUP} warm-up.\n"
    )
    print(results_table(results))
    print(
        "\n## Reference (peer, NOT measured by this script): CleanDiffuser on this CPU\n\n"
        f"Source: {REFERENCE_SOURCE}; same step and decision definitions, "
        "different shapes from ours.\n"
    )
    print(reference_table())
    print(f"\n(measured in {wall_s:.0f} s)")

    if args.json is not None:
        payload = {
            "torch": torch.__version__,
            "threads": threads,
            "machine": platform.machine(),
            "repeats": args.repeats,
            "block": args.block,
            "train_warmup": TRAIN_WARMUP,
            "decision_warmup": DECISION_WARMUP,
            "wall_s": wall_s,
            "results": [asdict(r) for r in results],
            "reference": {
                "source": REFERENCE_SOURCE,
                "note": "CleanDiffuser, quoted, not measured by this script",
                "rows": [asdict(ref) for ref in REFERENCES],
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
