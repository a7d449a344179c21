"""Generates (if needed) and registers the Shapes splits, then prints where they are.

    python projects/Shapes/prepare_shapes.py [--root DIR] [--num-train 2000] [--num-val 200] [--seed 0]
"""
import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `shapes` package beside this script

from shapes.datasets import DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SEED, register_shapes  # noqa: E402


def main(argv: Optional[List[str]] = None) -> int:
    """Parses the arguments, generates and registers the splits, prints each split's json and size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="cache folder (default $MRCNN_SHAPES_DIR or outputs/shapes_data)")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    names = register_shapes(args.root, args.num_train, args.num_val, args.seed)
    print(f"Shapes ready in {time.perf_counter() - start:.1f} s")
    for name, json_file in names.items():
        print(f"  {name}: {json_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
