"""DetectionCheckpointer: fvcore's Checkpointer that reads detectron2, Detectron and torchvision weights.

    checkpointer = DetectionCheckpointer(model, save_dir="output")
    extra = checkpointer.load("model_final_f10217.pkl")   # any format of formats.read_checkpoint
    print(extra["load_report"])                          # one table of every problem, by name
    checkpointer.save("model_0004999", iteration=4999)   # output/model_0004999.pth, atomically

Names: `.pth` files of this package and of detectron2 load by exact key.
Model-zoo `.pkl`, Detectron blobs and ImageNet backbones (whose names may
lack the model's prefixes, e.g. `res2.0.conv1.weight`) are also matched by
unique suffix (`report.match_by_suffix`). Tensors whose shape differs from the
model's are skipped. Every missing, unused or mismatched tensor goes into one
`LoadReport`: logged once as a table, returned under "load_report", and kept
as `last_load_report`.
"""
import logging
import os
from typing import Any, Dict, List, Optional

import torch
from fvcore.common.checkpoint import Checkpointer
from torch import nn

from .formats import atomic_write, read_checkpoint
from .report import LoadReport, match_by_suffix, shapes_of

__all__ = ["DetectionCheckpointer"]

# Entries of old checkpoints that this package derives from the config instead
# of storing (input normalisation, cell anchors): ignored, not reported.
def _is_config_derived(key: str) -> bool:
    return key in ("pixel_mean", "pixel_std") or "anchor_generator.cell_anchors." in key


class DetectionCheckpointer(Checkpointer):
    """Checkpointer for this package's models; see the module docstring.

    Arguments are fvcore's: (model, save_dir="", *, save_to_disk=True, **checkpointables).
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, save_to_disk: bool = True, **checkpointables: Any):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logging.getLogger(__name__)
        self.last_load_report: Optional[LoadReport] = None
        self._source = ""
        self._checkpoint_shapes: Dict[str, tuple] = {}
        self._renamed: Dict[str, str] = {}

    # ------------------------------------------------------------------ loading
    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        """Loads the model (and the named checkpointables) from `path`.

        Returns the file's remaining entries (e.g. "iteration") plus
        "load_report": the LoadReport of the model's weights. A missing file is
        a FileNotFoundError and an unreadable one a CheckpointError, both naming it.
        """
        self.last_load_report = None
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file {path} does not exist")
        self._source = path
        extra = super().load(path, checkpointables)
        if self.last_load_report is not None:
            extra["load_report"] = self.last_load_report
        return extra

    def _load_file(self, filename: str) -> Dict[str, Any]:
        """Any supported format, converted to detectron2 names (formats.read_checkpoint)."""
        checkpoint = read_checkpoint(filename)
        self.logger.info("Read %s (%s, %d tensors)", filename, checkpoint["format"], len(checkpoint["model"]))
        return checkpoint

    def _load_model(self, checkpoint: Dict[str, Any]):
        """Renames by suffix when the format asks for it, drops config-derived entries, then loads
        through fvcore (which skips tensors of the wrong shape)."""
        state_dict = checkpoint["model"]
        if state_dict and all(k.startswith("module.") for k in state_dict):
            # Saved from a DistributedDataParallel wrapper (fvcore strips this too, but after we look).
            checkpoint["model"] = state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        for key in [k for k in state_dict if _is_config_derived(k)]:
            del state_dict[key]
        self._renamed = {}
        if checkpoint.pop("matching_heuristics", False):
            model_keys = list(self.model.state_dict().keys())
            self._renamed, ambiguous = match_by_suffix(state_dict.keys(), model_keys)
            for old, new in self._renamed.items():
                state_dict[new] = state_dict.pop(old)
            if ambiguous:
                self.logger.warning("Checkpoint names matching several model names were not loaded: %s",
                                    ", ".join(ambiguous))
        for key in ("format", "__author__"):
            checkpoint.pop(key, None)
        self._checkpoint_shapes = shapes_of(state_dict)
        return super()._load_model(checkpoint)

    def _log_incompatible_keys(self, incompatible) -> None:
        """Builds the LoadReport and logs it once, as a table."""
        model_shapes = shapes_of(self.model.state_dict())
        mismatched = {k for k, _, _ in incompatible.incorrect_shapes}
        # fvcore drops mis-shaped tensors before loading, so they come back as missing too: list them once.
        missing = [k for k in incompatible.missing_keys
                   if k not in mismatched and not k.endswith("num_batches_tracked")]
        loaded = sum(1 for k in model_shapes if k in self._checkpoint_shapes and k not in mismatched)
        report = LoadReport(
            source=self._source, loaded=loaded,
            missing=[(k, model_shapes[k]) for k in sorted(missing)],
            unexpected=[(k, self._checkpoint_shapes.get(k, ())) for k in sorted(incompatible.unexpected_keys)],
            shape_mismatches=[(k, tuple(c), tuple(m)) for k, c, m in sorted(incompatible.incorrect_shapes)],
            renamed=dict(self._renamed))
        self.last_load_report = report
        if report.ok:
            self.logger.info(report.table())
        else:
            self.logger.warning(report.table())

    # ------------------------------------------------------------------ saving
    def save(self, name: str, **kwargs: Any) -> None:
        """Writes `save_dir/name.pth` ({"model", checkpointables..., **kwargs}) atomically, then
        points `last_checkpoint` at it (also atomically)."""
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"Checkpoint name {name!r} must not contain a directory")
        self.logger.info("Saving checkpoint to %s", save_file)
        self._remove_stale_temporaries()
        atomic_write(save_file, lambda f: torch.save(data, f), self.path_manager)
        self.tag_last_checkpoint(basename)

    def _remove_stale_temporaries(self) -> None:
        """Deletes half-written `.NAME.pth.*.tmp` files that a killed earlier save left behind.

        Only one process saves into a directory, and it is not mid-save here, so every
        such file is an orphan; none can be loaded (they never got their final name).
        """
        if not os.path.isdir(self.save_dir):
            return
        for entry in os.listdir(self.save_dir):
            if entry.startswith(".") and entry.endswith(".tmp") and ".pth." in entry:
                self.logger.warning("Removing the partial checkpoint %s left by an interrupted save", entry)
                os.remove(os.path.join(self.save_dir, entry))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Writes `save_dir/last_checkpoint` (the newest checkpoint's file name) atomically."""
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(save_file, lambda f: f.write(last_filename_basename.encode("utf-8")), self.path_manager)
