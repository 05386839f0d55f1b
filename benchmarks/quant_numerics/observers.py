"""The observer table: SQNR (dB) of every observer and scheme on a fixed tensor with outliers.

    benchmarks/quant_numerics/run.sh observers

Same figures as ``slimline quant-numerics --json FILE``; this prints them as Markdown. The tensor:
64 x 16384 values from N(0, s_c) (s_c from 0.5 to 2 by channel) plus 3 entries of +-40.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/quant_numerics.json"))
    ap.add_argument("--outliers", type=int, default=3)
    ap.add_argument("--magnitude", type=float, default=40.0)
    ap.add_argument("--percentile", type=float, default=99.99)
    args = ap.parse_args()

    from slimline.api import observer_table, outlier_tensor

    t0 = time.time()
    x = outlier_tensor(outliers=args.outliers, magnitude=args.magnitude)
    rows = observer_table(x, percentile=args.percentile)
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    print("| observer | " + " | ".join(schemes) + " |")
    print("|---" * (len(schemes) + 1) + "|")
    for obs in dict.fromkeys(r["observer"] for r in rows):
        by = {r["scheme"]: r for r in rows if r["observer"] == obs}
        print(f"| {obs} | " + " | ".join(f"{by[s]['sqnr_db']:.2f}" for s in schemes) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "tensor": {
                    "shape": list(x.shape),
                    "outliers": args.outliers,
                    "magnitude": args.magnitude,
                    "percentile": args.percentile,
                },
                "rows": rows,
                "seconds": time.time() - t0,
            },
            indent=2,
        )
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
