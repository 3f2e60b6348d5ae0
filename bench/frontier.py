"""Quality per training step: each recipe on the `quick` network, trained for equal step budgets, scored alike.

    python bench/frontier.py                                      # every recipe at 500/1,000/2,000/4,000 steps
    python bench/frontier.py --recipes edm,flow --budgets 1000 --seeds 0,1
    python bench/frontier.py --only-plot --plot docs/frontier.png --plot-fair docs/frontier_fair.png   # redraw

A recipe is a list of ``--set`` overrides on the `quick` preset (objective, noise-level density, loss weight) plus
the samplers it is scored with, each at <= 100 network evaluations per image (guidance counts both networks). Every
run trains with the same seed, batch and learning-rate schedule for its budget (the schedule follows the budget, as a
user's run of that many steps would), and every scoring draws 1,000 samples with seed 123, scored by the shipped
MNIST classifier: the confident fraction (top class > 0.9), classifier FID against the test split, and the entropy
of the predicted-class histogram (log2 10 = 3.32 bits for ten equally frequent digits; real test digits 3.32).
Steps, not seconds, make the rows comparable on a shared machine; each row also records the training img/s.

The ``diffusers`` recipe is the anchor: ``diffusers.UNet2DModel`` sized to the quick network's parameter count
(bench/common.py) with ``DDPMScheduler``'s training noise (plain ε-MSE, uniform t), trained by the same loop (same
data order, batch, optimizer, schedule, EMA, clipping) from initial weights that depend on the seed alone. It is
scored unguided by diffusers' own 50-step loops (DDPM, DDIM, DPM-Solver++, SDE-DPM-Solver++) and guided by its own
EMA after GUIDE_STEP, as ours is, through our guided denoiser (``--plot-fair`` draws the comparison; pick its lr
with ``--set train.lr=...`` and ``--tag``).

One JSON line per scoring goes to ``bench/results.jsonl`` (``name`` "frontier"); ``--samples DIR`` keeps each
scoring's 1,000 images as ``DIR/RECIPE-STEPS-sSEED-SAMPLER.npz`` (uint8, key ``images``, N x H x W x C).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

from common import append_result, command_line, load_average, machine  # noqa: E402

import minidiffusion  # noqa: E402
from minidiffusion.config import load_config  # noqa: E402

GUIDE_STEP = 90  # the step after which each run's EMA becomes its guide: the flow recipe's, and the anchor's
# name: (overrides on the quick preset, scorings "sampler:steps:guidance[:lo-hi]", lo-hi a guide interval in σ).
# Each recipe spells out its objective, loss weight, sampler and guide, so that the rows mean the same whatever the
# preset holds today.
DDPM = ["diffusion.objective=ddpm", "diffusion.min_snr_gamma=5", "sample.sampler=ddpm", "sample.steps=50",
        "sample.variance=small", "sample.guide_step=0", "sample.guide_at=0.25"]  # the quick preset until 2026-12-02
RECIPES: dict[str, tuple[list[str], list[str]]] = {
    "eps-minsnr": (DDPM, ["ddpm:50:1", "ddpm:50:2"]),
    "eps-lognormal": ([*DDPM, "diffusion.t_sampling=lognormal", "diffusion.uniform_mix=0.1"],
                      ["ddpm:50:1", "ddpm:50:2"]),
    "edm": (["diffusion.objective=edm", "diffusion.min_snr_gamma=0", "sample.sampler=heun", "sample.steps=18",
             "sample.guide_step=0", "sample.guide_at=0.25"], ["heun:18:1", "heun:18:2"]),
    "flow": (["diffusion.objective=flow", "diffusion.min_snr_gamma=0", "sample.sampler=heun", "sample.steps=25",
              "diffusion.logit_mean=0", f"sample.guide_step={GUIDE_STEP}"],
             ["heun:25:1", "heun:25:1.5", "heun:25:2"]),  # the quick preset 2026-12-02 to 12-03
    # the anchor, unguided and guided alike: diffusers' own loops as its users run them (DIFFUSERS_SAMPLERS), and
    # guided by its own EMA after GUIDE_STEP through the same guided denoiser as ours, with our ancestral DDPM and
    # DPM-Solver++ (step for step diffusers' DDPMScheduler and DPMSolverMultistepScheduler on 'linspace' timesteps)
    "diffusers": ([], ["diffusers-ddpm:50:1", "diffusers-ddim:50:1", "diffusers-dpmpp:50:1", "diffusers-sde-dpmpp:50:1",
                       "ddpm:50:2:0.33-4", "dpmpp:50:2:0.33-4"]),
}
# the scoring each recipe is plotted with: its sampler at its guidance (guidance above this trades class entropy)
HEADLINE = {"eps-minsnr": "ddpm:50:2", "eps-lognormal": "ddpm:50:2", "edm": "heun:18:2", "flow": "heun:25:2:0.33-4"}
# the fair comparison with the anchor (--plot-fair): unguided against unguided and guided against guided, one protocol
# (seeded initial weights, the same data order, schedule and step, each side's own EMA after GUIDE_STEP as its guide),
# each side with the sampler that scored best for it: (label, tag, scoring)
FAIR = [
    ("ours (flow), DPM-Solver++ 15: 15 calls", "flow-fair", "dpmpp:15:1"),
    ("diffusers, DDPMScheduler 50: 50 calls", "diffusers-lr4e-3", "diffusers-ddpm:50:1"),
    ("ours, guided w = 2, DPM-Solver++ 15: 23 calls", "flow-fair", "dpmpp:15:2:0.33-4"),
    ("diffusers, guided w = 2, ancestral DDPM 50: 71 calls", "diffusers-lr4e-3", "ddpm:50:2:0.33-4"),
]
# every recipe's rows were measured at lr 4e-3 (the quick preset's until 2026-12-04)
COMMON = ["train.lr=4e-3", "train.checkpoint_every=0", "train.sample_every=0", "train.log_every=50",
          "train.device=cpu"]
SAMPLE_SEED = 123


def counted_sample(model: minidiffusion.Model, n: int, seed: int = SAMPLE_SEED,
                   **options) -> tuple[torch.Tensor, float]:
    """``model.sample(n, seed=seed, ...)`` (default 123) and the network evaluations per image it really made (main
    and guide networks counted alike, by forward hooks): exact where guidance covers only part of the levels."""
    count = [0]

    def hook(module, inputs, output):
        count[0] += inputs[0].shape[0]

    nets = [m for m in (model.net, model.guide) if m is not None]
    handles = [m.register_forward_hook(hook) for m in nets]
    try:
        images = model.sample(n, seed=seed, batch_size=500, **options)
    finally:
        for h in handles:
            h.remove()
    return images, count[0] / n


class Scorer:
    """Confident fraction, classifier FID (test split) and class entropy of uint8 (N, 1, 28, 28) digits."""

    def __init__(self):
        from minidiffusion.config import DataConfig
        from minidiffusion.data import load_dataset
        from minidiffusion.evaluate import load_extractor, reference_stats, stats_dirs

        self.extractor = load_extractor("classifier", "mnist")
        data_cfg = DataConfig(name="mnist")
        self.reference = reference_stats(self.extractor, load_dataset(data_cfg, "test"), "test", stats_dirs(data_cfg))

    def __call__(self, images: torch.Tensor) -> dict:
        from minidiffusion.evaluate import class_summary, extract, feature_statistics, frechet_distance

        features, logits = extract(self.extractor, images)
        summary = class_summary(logits)
        hist = np.asarray(summary["class_histogram"], dtype=np.float64)
        p = hist / hist.sum()
        entropy = float(-(p[p > 0] * np.log2(p[p > 0])).sum()) + 0.0
        fid = frechet_distance(*feature_statistics(features), self.reference.mu, self.reference.sigma)
        return {"confident": summary["confident_fraction"], "fid_classifier": float(fid), "entropy_bits": entropy,
                "mean_confidence": summary["mean_confidence"], "histogram": summary["class_histogram"]}


def train_ours(recipe: str, steps: int, seed: int, out: Path, extra: list[str],
               guide: str | None = None) -> tuple[minidiffusion.Model, float]:
    """Train (or, when ``out`` already holds this run's final checkpoint of the same config, reuse) and load the EMA
    model, with ``guide`` (a checkpoint) as its guide instead of the one the run carries."""
    cfg = load_config("quick", RECIPES[recipe][0] + COMMON + [f"train.steps={steps}", f"train.seed={seed}"] + extra)
    done = out / "checkpoints" / f"ckpt_{steps:08d}.json"
    if not (done.is_file() and _what_trains(load_config(out / "config.toml", saved=True)) == _what_trains(cfg)):
        minidiffusion.train(cfg, out, progress=False)
    return minidiffusion.load(out, guide=guide), _img_per_s(out)


def _what_trains(cfg) -> dict:
    """The config less the [sample] keys that do not change the checkpoint (all but the guide's step)."""
    d = cfg.to_dict()
    d["sample"] = {k: d["sample"][k] for k in ("guide_step", "guide_at")}
    return d


def _img_per_s(run: Path) -> float:
    rates = [r["img_per_s"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "img_per_s" in r]
    return float(np.median(rates)) if rates else math.nan


def train_diffusers(steps: int, seed: int, out: Path, extra: list[str]):
    """diffusers' UNet2DModel at the quick network's size, trained on DDPMScheduler's noising with the plain ε-MSE of
    diffusers' training example, by the loop's own parts: the same batch order, timesteps and noise draws per step
    as our ddpm recipe (``training.draw_batch``), the same learning-rate schedule, and the library's own step (clipping,
    AdamW, EMA: ``common.TrainStep``). Its initial weights come from the seed alone (built right after seeding).
    Returns (a ``minidiffusion.Model`` of the EMA network with its EMA after GUIDE_STEP as guide; img/s). Both
    networks are kept in ``out/anchor.pt``, which a later call with the same config loads instead of training."""
    import copy

    from common import Settings, TrainStep, build_models

    from minidiffusion.data import load_dataset
    from minidiffusion.training import BatchOrder, draw_batch, lr_at

    cfg = load_config("quick", DDPM + COMMON + [f"train.steps={steps}", f"train.seed={seed}",
                                                "diffusion.min_snr_gamma=0"] + extra)  # plain ε-MSE, uniform t
    models, _ = build_models(cfg, ["diffusers"], seed=seed)
    anchor = next(m for m in models if m.label == "diffusers")
    saved = out / "anchor.pt"
    if saved.is_file():  # this run trained before with the same config: its EMA and guide, as they were saved
        record = torch.load(saved, weights_only=True)
        if record["config"] == cfg.to_dict():
            guide = None if record["guide"] is None else copy.deepcopy(anchor.net)
            anchor.net.load_state_dict(record["ema"])
            if guide is not None:
                guide.load_state_dict(record["guide"])
            return minidiffusion.Model(anchor.net.eval(), cfg, (1, 28, 28), guide=guide), record["img_per_s"]
    torch.manual_seed(seed)
    step = TrainStep(anchor.net, cfg, Settings(device="cpu"))
    data = load_dataset(cfg.data, "train")
    order = BatchOrder(len(data), cfg.train.batch_size, seed)
    guide = None
    started = time.perf_counter()
    for s in range(steps):  # the library's own draws of step s (uniform timesteps for the ddpm objective)
        x0, t, noise = draw_batch(cfg, step.objective, data.tensor[order.indices(s)], s, slice(None), flip=False)
        step(x0, t, noise, s, lr_at(cfg, s, steps))
        if s + 1 == GUIDE_STEP:
            guide = copy.deepcopy(step.ema)
    img_s = steps * cfg.train.batch_size / (time.perf_counter() - started)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"config": cfg.to_dict(), "ema": step.ema.state_dict(),
                "guide": None if guide is None else guide.state_dict(), "img_per_s": img_s}, saved)
    return minidiffusion.Model(step.ema.eval(), cfg, (1, 28, 28), guide=guide), img_s


# diffusers' own sampling loops for the anchor, as its users run them: DDPMScheduler as DDPMPipeline configures it
# ('leading' spacing, fixed_small variance, x0 clipped), and its deterministic and stochastic solvers on 'trailing'
# timesteps (the spacing diffusers recommends for few steps)
DIFFUSERS_SAMPLERS = {
    "diffusers-ddpm": ("DDPMScheduler", {"clip_sample": True}),
    "diffusers-ddim": ("DDIMScheduler", {"clip_sample": True, "timestep_spacing": "trailing"}),
    "diffusers-dpmpp": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}),
    "diffusers-sde-dpmpp": ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing",
                                                            "algorithm_type": "sde-dpmsolver++"}),
}


def sample_diffusers(net, n: int, steps: int, sampler: str = "diffusers-ddpm", device: str = "cpu") -> torch.Tensor:
    """``DIFFUSERS_SAMPLERS[sampler]``'s own loop of ``steps`` steps on the linear β schedule, the initial noise from
    per-image seeds (as ours); uint8 (n, 1, 28, 28) on the CPU."""
    import diffusers

    from minidiffusion.diffusion import image_generators, image_seeds
    from minidiffusion.diffusion.samplers import randn
    from minidiffusion.images import to_pixels

    name, options = DIFFUSERS_SAMPLERS[sampler]
    out = []
    for start in range(0, n, 500):
        count = min(500, n - start)
        gens = image_generators(image_seeds(SAMPLE_SEED, start, count))
        scheduler = getattr(diffusers, name)(num_train_timesteps=1000, beta_schedule="linear", **options)
        scheduler.set_timesteps(steps)
        x = randn((count, 1, 28, 28), gens, "cpu").to(device)
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = net(x, torch.full((count,), int(t), device=device))
                x = scheduler.step(eps, t, x, generator=gens[0]).prev_sample
        out.append(to_pixels(x).cpu())
    return torch.cat(out)


def run_one(recipe: str, steps: int, seed: int, args, scorer: Scorer) -> list[dict]:
    tag = args.tag or recipe
    out = Path(args.out) / f"{tag}-{steps}-s{seed}"
    started = time.perf_counter()
    records = []
    if recipe == "diffusers":
        model, img_s = train_diffusers(steps, seed, out, args.set)
    else:
        model, img_s = train_ours(recipe, steps, seed, out, args.set, args.guide)
    params = sum(p.numel() for p in model.net.parameters())
    train_s = time.perf_counter() - started
    for spec in args.scorings.split(",") if args.scorings else RECIPES[recipe][1]:
        sampler, sampler_steps, guidance, *interval = spec.split(":")
        sampler_steps, guidance = int(sampler_steps), float(guidance)
        interval = [float(v) for v in interval[0].split("-")] if interval else []
        t0 = time.perf_counter()
        if sampler in DIFFUSERS_SAMPLERS:
            images, nfe = sample_diffusers(model.net, args.n, sampler_steps, sampler), sampler_steps
        else:
            images, nfe = counted_sample(model, args.n, sampler=sampler, steps=sampler_steps, guidance=guidance,
                                         guide_interval=interval)
        sample_s = time.perf_counter() - t0
        score = scorer(images)
        if args.samples:
            within = f"-i{interval[0]:g}-{interval[1]:g}" if interval else ""
            path = Path(args.samples) / f"{tag}-{steps}-s{seed}-{sampler}{sampler_steps}-w{guidance:g}{within}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, images=images.permute(0, 2, 3, 1).numpy())
        records.append({"name": "frontier", "recipe": recipe, "tag": tag, "train_steps": steps, "seed": seed,
                        "sampler": sampler, "sampler_steps": sampler_steps, "guidance": guidance,
                        "guide": args.guide or "the run's own", "guide_interval": interval, "nfe": round(nfe, 2),
                        "n": args.n, **score,
                        "img_per_s": round(img_s, 1), "train_s": round(train_s, 1), "sample_s": round(sample_s, 1),
                        "params": params, "overrides": RECIPES[recipe][0] + args.set, "machine": machine("cpu"),
                        "torch": torch.__version__, "threads": torch.get_num_threads(), "load_avg": load_average(),
                        "command": command_line(), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return records


def table(records: list[dict]) -> str:
    lines = ["| recipe | steps | seed | sampler | NFE | confident | classifier FID | entropy (bits) | train img/s |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(records, key=lambda r: (r["recipe"], r["train_steps"], r["seed"], r["nfe"])):
        lines.append(f"| {r['recipe']} | {r['train_steps']:,} | {r['seed']} | {r['sampler']} {r['sampler_steps']}"
                     f"{' w=' + format(r['guidance'], 'g') if r['guidance'] != 1 else ''} | {r['nfe']} | "
                     f"{r['confident']:.3f} | {r['fid_classifier']:.2f} | {r['entropy_bits']:.3f} | "
                     f"{r['img_per_s']:.0f} |")
    return "\n".join(lines)


def _rows(records: list[dict], tag: str, spec: str) -> dict[int, dict]:
    """Seed-0 records of ``tag`` at scoring ``spec`` ("sampler:steps:guidance[:lo-hi]"), by training steps."""
    sampler, steps, guidance, *interval = spec.split(":")
    interval = [float(v) for v in interval[0].split("-")] if interval else []
    return {r["train_steps"]: r for r in records
            if r.get("tag", r["recipe"]) == tag and r["seed"] == 0 and r["sampler"] == sampler
            and r["sampler_steps"] == int(steps) and r["guidance"] == float(guidance)
            and r.get("guide_interval", []) == interval}


def _draw(lines: list[tuple[str, dict[int, dict], dict]], title: str, path: str) -> None:
    """Confident fraction and classifier FID against training steps: (label, rows by steps, line style) each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows, style in lines:
        xs = sorted(rows)
        axes[0].plot(xs, [rows[x]["confident"] for x in xs], marker="o", label=label, **style)
        axes[1].plot(xs, [rows[x]["fid_classifier"] for x in xs], marker="o", label=label, **style)
    for ax, label in zip(axes, ("confident fraction (1,000 samples)", "classifier FID (lower is better)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training steps (batch 64)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot(records: list[dict], path: str) -> None:
    """Our recipes, one line per recipe, each at its HEADLINE scoring (seed 0)."""
    lines = []
    for recipe, spec in HEADLINE.items():
        rows = _rows(records, recipe, spec)
        if rows:
            sampler, steps, guidance, *interval = spec.split(":")
            within = f" on σ ∈ [{interval[0].replace('-', ', ')}]" if interval else ""
            label = f"{recipe} ({sampler} {steps}{', w = ' + guidance if float(guidance) != 1 else ''}{within})"
            lines.append((label, rows, {}))
    _draw(lines, "quick network (0.51M), CPU: quality per training step, our recipes", path)


def plot_fair(records: list[dict], path: str) -> None:
    """``FAIR``: ours against diffusers' UNet2DModel, unguided (solid) and guided (dashed)."""
    lines = [(label, rows, {"color": "C0" if tag.startswith("flow") else "C3",
                            "linestyle": "--" if "guided" in label else "-"})
             for label, tag, spec in FAIR if (rows := _rows(records, tag, spec))]
    _draw(lines, "quick-sized networks (0.50-0.51M), CPU, one protocol: ours against diffusers", path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated from {', '.join(RECIPES)}")
    parser.add_argument("--budgets", default="500,1000,2000,4000", help="training steps, comma-separated")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    parser.add_argument("--n", type=int, default=1000, help="samples per scoring")
    parser.add_argument("--set", action="append", default=[], help="an override for every recipe")
    parser.add_argument("--tag", default=None, help="name the rows (and run directories) of a variant made by --set")
    parser.add_argument("--scorings", default=None, help="sampler:steps:guidance,... instead of the recipe's own")
    parser.add_argument("--guide", default=None, help="score with this checkpoint as the guide (e.g. the same seed "
                        "trained k steps: exactly the in-run EMA after step k) instead of the run's own")
    parser.add_argument("--out", default="/tmp/frontier", help="run directories go here")
    parser.add_argument("--samples", default=None, help="keep each scoring's images here as .npz")
    parser.add_argument("--results", default=str(BENCH / "results.jsonl"))
    parser.add_argument("--plot", default=None, help="draw our recipes' frontier records in --results here")
    parser.add_argument("--plot-fair", default=None, help="draw the comparison with the anchor (FAIR) here")
    parser.add_argument("--only-plot", action="store_true", help="draw --plot from --results, train nothing")
    args = parser.parse_args(argv)
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        parser.error(f"unknown recipes {unknown} (known: {', '.join(RECIPES)})")
    records = []
    if not args.only_plot:
        torch.set_num_threads(torch.get_num_threads())
        scorer = Scorer()
        for steps in (int(s) for s in args.budgets.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                for recipe in recipes:
                    for record in run_one(recipe, steps, seed, args, scorer):
                        append_result(record, Path(args.results))
                        records.append(record)
                        print(json.dumps({k: record[k] for k in ("tag", "train_steps", "seed", "sampler",
                                                                 "sampler_steps", "guidance", "confident",
                                                                 "fid_classifier", "entropy_bits", "img_per_s")}),
                              flush=True)
        print(table(records))
    if args.plot or args.plot_fair:
        everything = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
        frontier = [r for r in everything if r.get("name") == "frontier"]
        if args.plot:
            plot(frontier, args.plot)
        if args.plot_fair:
            plot_fair(frontier, args.plot_fair)


if __name__ == "__main__":
    main(sys.argv[1:])
