"""Commands: ``python -m datamodules.severstal fixture --out DIR`` and ``... prepare --root DIR_OR_ZIP --out DIR``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datamodules.severstal", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fx = sub.add_parser("fixture", help="write a synthetic data set in the Kaggle format (train.csv + train_images/)")
    fx.add_argument("--out", required=True)
    fx.add_argument("--images", type=int, default=8)
    fx.add_argument("--num-classes", type=int, default=4)
    fx.add_argument("--seed", type=int, default=0)
    fx.add_argument("--height", type=int, default=256)
    fx.add_argument("--width", type=int, default=1600)
    fx.add_argument("--force", action="store_true", help="rewrite an existing fixture")
    pr = sub.add_parser("prepare", help="build the COIGAN data sets (what SeverstalCOIGANDataModule.prepare_data does)")
    pr.add_argument("--root", required=True, help="Kaggle folder (train.csv, train_images/) or the competition zip")
    pr.add_argument("--out", required=True, help="prepared_dir")
    pr.add_argument("--num-workers", type=int, default=-1, help="processes, -1 = all CPUs")
    pr.add_argument("--force", action="store_true", help="redo every step")
    pr.add_argument("--tile-size", type=int, default=256)
    pr.add_argument("--num-classes", type=int, default=4)
    pr.add_argument("--split-mode", choices=("fair", "random"), default="fair")
    pr.add_argument("--train-ratio", type=float, default=0.5)
    pr.add_argument("--split-seed", type=int, default=42)
    pr.add_argument("--no-plots", action="store_true", help="skip the report's PNG histograms (matplotlib)")
    args = parser.parse_args(argv)

    if args.command == "fixture":
        from datamodules.severstal.fixture import make_fixture

        if (Path(args.out) / "train.csv").is_file() and not args.force:
            print(f"{args.out} already holds a fixture (train.csv); nothing to do (--force rewrites it).")
            return 0
        make_fixture(args.out, images=args.images, num_classes=args.num_classes, seed=args.seed, height=args.height,
                     width=args.width, progress=True)
        print(f"wrote {args.images} images and train.csv to {args.out}")
        return 0

    from datamodules.idx import DataError
    from datamodules.severstal.prepare import prepare_severstal

    try:
        summary = prepare_severstal(args.root, args.out, num_workers=args.num_workers, force=args.force,
                                    tile_size=args.tile_size, num_classes=args.num_classes, split_mode=args.split_mode,
                                    train_ratio=args.train_ratio, split_seed=args.split_seed, plots=not args.no_plots)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for step, status in summary["steps"].items():
        seconds = summary["seconds"].get(step)
        print(f"{step:12s} {status}" + (f" ({seconds:.1f} s)" if seconds is not None else ""))
    convert = summary["info"].get("convert", {})
    print(json.dumps({"skipped_rows": convert.get("skipped_rows"), "skipped_images": convert.get("skipped_images"),
                      "skipped_list": str(Path(args.out) / "skipped.json"),
                      "report": str(Path(args.out) / "reports" / "report.md")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
