"""Training-plan benchmark: plan an epoch from the 30-site synthetic index of ``atlas bench index``.

    python benchmarks/plan.py --out benchmarks/results --images 12000000 [--keep DIR]

``--keep DIR`` keeps the generated index there and reuses it on the next run.
"""

import argparse
from pathlib import Path

from atlas.bench.plan import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-results/plan"))
    parser.add_argument("--images", type=int, default=60_000_000)
    parser.add_argument("--sites", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    run(args.out, images=args.images, sites=args.sites, repeats=args.repeats, keep=args.keep,
        baseline=not args.no_baseline)  # fmt: skip
