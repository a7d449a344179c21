"""Importing this module registers the default Shapes splits (`shapes_train`, `shapes_val`).

The Shapes configs list it in `PLUGINS`, which the model builder imports (in
every training process, spawned ones included), so `shapes_train` / `shapes_val`
exist by the time the trainer builds its data loaders. Needs projects/Shapes on
sys.path (PYTHONPATH, or projects/Shapes/train_net.py). Generates the data on
first use. Splits registered under these names before, e.g. with other sizes
through `register_shapes(num_train=...)`, are left as they are.
"""
from mrcnn_plugin.data import DatasetCatalog

from .datasets import register_shapes

if not {"shapes_train", "shapes_val"} <= set(DatasetCatalog.list()):
    register_shapes()
