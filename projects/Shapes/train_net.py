"""Trains or evaluates a Shapes config with the project's trainer (`mrcnn train`), no setup needed.

    python projects/Shapes/train_net.py --config-file projects/Shapes/configs/mask_rcnn_R18_FPN_shapes.yaml
    python projects/Shapes/train_net.py --config-file ... --eval-only MODEL.WEIGHTS outputs/shapes/.../model_final.pth

Same flags and KEY VALUE overrides as `mrcnn train`. The only thing added is
projects/Shapes on sys.path, so the configs' plugin `shapes.builtin` (which
registers the datasets) imports; spawned worker processes inherit the path.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mrcnn_plugin.engine.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
