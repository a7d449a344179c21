"""How a record's "bbox" is written: `BoxMode` and conversion between its modes.

Dataset records keep boxes as the annotation file wrote them (COCO: XYWH in
absolute pixels) and say so in "bbox_mode"; the mapper converts to XYXY, which
is what `Boxes` and the model use. The integer values are detectron2's, so
records pickled by either library mean the same thing.
"""
from enum import IntEnum
from typing import List, Sequence, Union

import numpy as np
import torch

__all__ = ["BoxMode"]

_BoxLike = Union[Sequence[float], np.ndarray, torch.Tensor]


class BoxMode(IntEnum):
    """XYXY_ABS: (x0, y0, x1, y1) pixels; XYWH_ABS: (x0, y0, width, height) pixels."""

    XYXY_ABS = 0
    XYWH_ABS = 1

    @staticmethod
    def convert(box: _BoxLike, from_mode: "BoxMode", to_mode: "BoxMode") -> _BoxLike:
        """Converts one box (4 numbers) or boxes ([N, 4]) between modes.

        Returns the same kind of object it was given: a list/tuple of 4 floats,
        an ndarray or a Tensor (a new one; the input is left untouched).
        """
        from_mode, to_mode = BoxMode(from_mode), BoxMode(to_mode)
        if from_mode == to_mode:
            return box
        original_type = type(box)
        is_single = isinstance(box, (list, tuple))
        if is_single:
            if len(box) != 4:
                raise ValueError(f"A box has 4 numbers, got {len(box)}: {box!r}")
            arr = torch.tensor([list(box)], dtype=torch.float64)
        elif isinstance(box, np.ndarray):
            arr = torch.from_numpy(np.array(box, dtype=np.float64))
        else:
            arr = box.clone()
        flat = arr.reshape(-1, 4)
        if from_mode == BoxMode.XYWH_ABS:  # -> XYXY_ABS
            flat[:, 2] += flat[:, 0]
            flat[:, 3] += flat[:, 1]
        else:  # XYXY_ABS -> XYWH_ABS
            flat[:, 2] -= flat[:, 0]
            flat[:, 3] -= flat[:, 1]
        if is_single:
            values: List[float] = flat[0].tolist()
            return original_type(values)
        if isinstance(box, np.ndarray):
            return flat.reshape(box.shape).numpy().astype(box.dtype, copy=False)
        return flat.reshape(box.shape)
