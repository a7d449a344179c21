"""Runs `mrcnn train` (train_cli.main) with deterministic algorithms: the resume test's subprocess.

    python engine_run_train.py [train arguments...]
"""
import sys

import torch

if __name__ == "__main__":
    # Bitwise reproducibility: no nondeterministic kernels, one thread (same reduction order every run).
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    from mrcnn_plugin.engine.train_cli import main

    sys.exit(main(sys.argv[1:]))
