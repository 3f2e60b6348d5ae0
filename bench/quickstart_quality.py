"""The quickstart's quality, as a benchmark (not a test): score a run's 1,000 samples (seed 123) against the goals.

    bash scripts/quickstart.sh && python bench/quickstart_quality.py runs/quick --samples bench/samples/quickstart.npz

Prints the confident fraction (the shipped classifier's top class > 0.9), classifier FID against the MNIST test split
and the class-histogram entropy, each beside its goal (issue "Learn more per image": >= 0.85 confident and classifier
FID <= 1.0 in <= 10 minutes end to end on 2 cores; the moonshot is 0.90; real test digits score 0.955), and appends
one record to bench/results.jsonl. The run's own sampler and guidance are used, as `minidiffusion sample` would.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))

from common import append_result, command_line, machine  # noqa: E402
from frontier import Scorer, counted_sample  # noqa: E402

import minidiffusion  # noqa: E402

GOALS = {"confident": (">=", 0.85), "fid_classifier": ("<=", 1.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="the quickstart's run directory (runs/quick)")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--samples", default=None, help="also keep the images here (.npz, uint8 'images' NHWC)")
    parser.add_argument("--minutes", type=float, default=None, help="the quickstart's measured end-to-end time")
    parser.add_argument("--guide", default=None, help="another guide checkpoint than the run's own")
    parser.add_argument("--results", default=None, help="append the record here (bench/results.jsonl to record a "
                                                         "measurement; default: print only)")
    args = parser.parse_args(argv)
    model = minidiffusion.load(args.run, guide=args.guide)
    sc = model.config.sample
    images, nfe = counted_sample(model, args.n)
    score = Scorer()(images)
    if args.samples:
        Path(args.samples).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.samples, images=images.permute(0, 2, 3, 1).numpy())
    fitted = model.checkpoint.meta.get("fitted")  # [length, train.steps] when train.fit_time_limit fitted the schedule
    schedule = fitted[0] if fitted else model.config.train.steps
    met = {k: (score[k] >= v if op == ">=" else score[k] <= v) for k, (op, v) in GOALS.items()}
    record = {"name": "quickstart quality", "run": str(args.run), "train_steps": model.checkpoint.step,
              "schedule_steps": schedule, "fitted_from": fitted and fitted[1], "sampler": sc.sampler,
              "sampler_steps": sc.steps, "guidance": sc.guidance, "guide": args.guide or "the run's own",
              "guide_interval": list(sc.guide_interval), "nfe": round(nfe, 2), "n": args.n, **score,
              "minutes": args.minutes, "goals_met": met, "machine": machine("cpu"), "command": command_line(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if args.results:
        append_result(record, Path(args.results))
    for key, (op, goal) in GOALS.items():
        print(f"{key:15} {score[key]:8.3f}   goal {op} {goal}   {'met' if met[key] else 'NOT met'}")
    print(f"{'entropy_bits':15} {score['entropy_bits']:8.3f}   (ten equal classes: 3.322)")
    print(f"trained {model.checkpoint.step} of {schedule} steps"
          + (f" (train.fit_time_limit fitted the schedule from {fitted[1]})" if fitted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
