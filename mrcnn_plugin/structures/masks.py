"""Instance masks as bitmaps or polygons, and their crop-and-resize into mask-head targets."""
import copy
from typing import Any, List, Optional, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["BitMasks", "PolygonMasks", "polygons_to_bitmask", "rasterize_polygons_within_box"]


def polygons_to_bitmask(polygons: List[np.ndarray], height: int, width: int) -> np.ndarray:
    """Rasterizes polygons (each a flat array x0, y0, x1, y1, ...) into a bool array [height, width]."""
    if len(polygons) == 0:
        return np.zeros((height, width)).astype(bool)
    rles = mask_util.frPyObjects(polygons, height, width)
    rle = mask_util.merge(rles)
    return mask_util.decode(rle).astype(bool)


def rasterize_polygons_within_box(polygons: List[np.ndarray], box: np.ndarray, mask_size: int) -> Tensor:
    """Rasterizes the part of an instance's polygons inside `box` (XYXY) as a mask_size^2 bool Tensor.

    Cropping and scaling the polygon before rasterizing is what Mask R-CNN does
    for its 28x28 targets: it avoids rasterizing the full image per instance.
    """
    w, h = box[2] - box[0], box[3] - box[1]
    polygons = copy.deepcopy(polygons)
    for p in polygons:
        p[0::2] = p[0::2] - box[0]
        p[1::2] = p[1::2] - box[1]
    ratio_h = mask_size / max(h, 0.1)
    ratio_w = mask_size / max(w, 0.1)
    if ratio_h == ratio_w:
        for p in polygons:
            p *= ratio_h
    else:
        for p in polygons:
            p[0::2] *= ratio_w
            p[1::2] *= ratio_h
    mask = polygons_to_bitmask(polygons, mask_size, mask_size)
    return torch.from_numpy(mask)


class BitMasks:
    """N full-image masks, `tensor`: Tensor[N, H, W] bool.

    Indexing does not copy: a BitMasks picked out of another keeps the
    original masks and the picked rows (Tensor[N] int64). ROI sampling picks a
    gt mask for each of 512 proposals per image; copying them would move
    512 full-image masks per image and step, where the mask head only needs
    the 28x28 crops of the foreground ones. `tensor` gathers the rows on first use.
    """

    def __init__(self, tensor: Union[Tensor, np.ndarray]):
        if isinstance(tensor, Tensor):
            tensor = tensor.to(torch.bool)
        else:
            tensor = torch.as_tensor(tensor, dtype=torch.bool)
        if tensor.dim() != 3:
            raise ValueError(f"BitMasks need Tensor[N, H, W], got shape {tuple(tensor.shape)}")
        self.image_size = tensor.shape[1:]
        self._source = tensor
        self._rows: Optional[Tensor] = None  # None: all of _source, in order

    @classmethod
    def _picked(cls, source: Tensor, rows: Tensor) -> "BitMasks":
        masks = cls.__new__(cls)
        masks.image_size = source.shape[1:]
        masks._source = source
        masks._rows = rows
        return masks

    @property
    def tensor(self) -> Tensor:
        if self._rows is not None:
            self._source = self._source.index_select(0, self._rows)
            self._rows = None
        return self._source

    def _source_rows(self) -> Tensor:
        """Tensor[N] int64: which masks of `_source` these are."""
        if self._rows is None:
            return torch.arange(self._source.shape[0], device=self._source.device)
        return self._rows

    def to(self, *args: Any, **kwargs: Any) -> "BitMasks":
        return BitMasks(self.tensor.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self._source.device

    def __getitem__(self, item) -> "BitMasks":
        if isinstance(item, int):
            return BitMasks(self.tensor[item].unsqueeze(0))
        rows = self._source_rows()[item]
        if rows.dim() == 0:
            rows = rows.unsqueeze(0)
        return BitMasks._picked(self._source, rows)

    def __len__(self) -> int:
        return self._source.shape[0] if self._rows is None else self._rows.shape[0]

    def nonempty(self) -> Tensor:
        return self.tensor.flatten(1).any(dim=1)

    def get_bounding_boxes(self):
        """Tight XYXY boxes around each mask (zeros for an empty mask), as `Boxes`."""
        from .boxes import Boxes

        masks = self.tensor
        boxes = torch.zeros(masks.shape[0], 4, dtype=torch.float32)
        x_any = torch.any(masks, dim=1)
        y_any = torch.any(masks, dim=2)
        for idx in range(masks.shape[0]):
            x = torch.where(x_any[idx, :])[0]
            y = torch.where(y_any[idx, :])[0]
            if len(x) > 0 and len(y) > 0:
                boxes[idx, :] = torch.as_tensor([x[0], y[0], x[-1] + 1, y[-1] + 1], dtype=torch.float32)
        return Boxes(boxes)

    def crop_and_resize(self, boxes: Tensor, mask_size: int) -> Tensor:
        """Bilinear crop of each mask i inside boxes[i] (Tensor[N, 4] XYXY) -> Tensor[N, M, M] bool.

        Equals ROIAlign (aligned, adaptive sampling) of the full masks at 0.5.
        Each source mask is converted to float only over the region its boxes'
        samples can read (the boxes' union plus a 2-pixel margin), not at full
        image size; the shift of the boxes into that region is exact in float.
        """
        if len(boxes) != len(self):
            raise ValueError(f"{len(boxes)} boxes for {len(self)} masks")
        device = self._source.device
        boxes = boxes.to(device=device, dtype=torch.float32)
        out = torch.zeros((len(boxes), mask_size, mask_size), dtype=torch.bool, device=device)
        if len(boxes) == 0:
            return out
        rows = self._source_rows()
        height, width = int(self.image_size[0]), int(self.image_size[1])
        for source_row in torch.unique(rows).tolist():
            picked = torch.nonzero(rows == source_row).squeeze(1)
            region = _sample_region(boxes[picked], height, width)
            if region is None:
                continue  # every box lies outside the image: ROIAlign reads only zeros
            x0, y0, x1, y1 = region
            crop = self._source[source_row, y0:y1, x0:x1].to(torch.float32)[None, None]
            shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32, device=device)
            rois = torch.cat([torch.zeros((len(picked), 1), device=device), boxes[picked] - shift], dim=1)
            output = roi_align(crop, rois, (mask_size, mask_size), 1.0, 0, True)
            out[picked] = output[:, 0] >= 0.5
        return out

    @staticmethod
    def cat(bitmasks_list: List["BitMasks"]) -> "BitMasks":
        return BitMasks(torch.cat([bm.tensor for bm in bitmasks_list], dim=0))


def _sample_region(boxes: Tensor, height: int, width: int) -> Optional[Tuple[int, int, int, int]]:
    """The pixels (x0, y0, x1, y1), end exclusive, that ROIAlign samples inside `boxes` (Tensor[B, 4]) can read.

    A sample at x reads pixels floor(x) and floor(x) + 1, with x within
    [box x0 - 0.5, box x1 - 0.5] (aligned); one extra pixel each side keeps
    every sample of the region clear of its edge, where ROIAlign clamps,
    unless that edge is the image's own. None if the region is empty.
    """
    lo = boxes[:, :2].min(dim=0).values.floor() - 2
    hi = boxes[:, 2:].max(dim=0).values.ceil() + 2
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), width), min(int(hi[1]), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


class PolygonMasks:
    """N instance masks, each a list of polygons, each polygon a float64 array [2k] (x, y, ...)."""

    def __init__(self, polygons: List[List[Union[Tensor, np.ndarray, List[float]]]]):
        if not isinstance(polygons, list):
            raise ValueError(f"PolygonMasks need a list of lists of polygons, got {type(polygons)}")

        def to_array(p) -> np.ndarray:
            if isinstance(p, Tensor):
                p = p.cpu().numpy()
            return np.asarray(p, dtype=np.float64).reshape(-1)

        def process(polygons_per_instance) -> List[np.ndarray]:
            if not isinstance(polygons_per_instance, list):
                raise ValueError("Each instance's polygons must be a list, "
                                 f"got {type(polygons_per_instance)}")
            arrays = [to_array(p) for p in polygons_per_instance]
            for p in arrays:
                if len(p) % 2 != 0 or len(p) < 6:
                    raise ValueError(f"A polygon needs at least 3 (x, y) points, got {len(p)} numbers")
            return arrays

        self.polygons: List[List[np.ndarray]] = [process(p) for p in polygons]

    def to(self, *args: Any, **kwargs: Any) -> "PolygonMasks":
        return self

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def get_bounding_boxes(self):
        """Tight XYXY boxes around each instance's polygons, as `Boxes`."""
        from .boxes import Boxes

        boxes = torch.zeros(len(self.polygons), 4, dtype=torch.float32)
        for idx, polygons_per_instance in enumerate(self.polygons):
            minxy = torch.as_tensor([float("inf"), float("inf")], dtype=torch.float32)
            maxxy = torch.zeros([2], dtype=torch.float32)
            for polygon in polygons_per_instance:
                coords = torch.from_numpy(polygon).view(-1, 2).to(dtype=torch.float32)
                minxy = torch.min(minxy, torch.min(coords, dim=0).values)
                maxxy = torch.max(maxxy, torch.max(coords, dim=0).values)
            boxes[idx, :2] = minxy
            boxes[idx, 2:] = maxxy
        return Boxes(boxes)

    def nonempty(self) -> Tensor:
        return torch.from_numpy(np.asarray([len(p) > 0 for p in self.polygons], dtype=bool))

    def __getitem__(self, item) -> "PolygonMasks":
        if isinstance(item, int):
            selected = [self.polygons[item]]
        elif isinstance(item, slice):
            selected = self.polygons[item]
        elif isinstance(item, list):
            selected = [self.polygons[i] for i in item]
        elif isinstance(item, Tensor):
            if item.dtype == torch.bool:
                if item.dim() != 1:
                    raise ValueError(f"Boolean index must be 1-d, got shape {tuple(item.shape)}")
                item = item.nonzero().squeeze(1)
            selected = [self.polygons[i] for i in item.cpu().numpy().tolist()]
        else:
            raise ValueError(f"Unsupported index type {type(item)} for PolygonMasks")
        return PolygonMasks(selected)

    def __len__(self) -> int:
        return len(self.polygons)

    def __iter__(self):
        return iter(self.polygons)

    def crop_and_resize(self, boxes: Tensor, mask_size: int) -> Tensor:
        """Rasterizes each instance i inside boxes[i] (Tensor[N, 4] XYXY) -> Tensor[N, M, M] bool."""
        if len(boxes) != len(self):
            raise ValueError(f"{len(boxes)} boxes for {len(self)} masks")
        device = boxes.device
        boxes_np = boxes.detach().to(torch.device("cpu")).numpy()
        results = [rasterize_polygons_within_box(poly, box, mask_size)
                   for poly, box in zip(self.polygons, boxes_np)]
        if len(results) == 0:
            return torch.empty(0, mask_size, mask_size, dtype=torch.bool, device=device)
        return torch.stack(results, dim=0).to(device=device)

    def area(self) -> Tensor:
        """Area of each instance (sum over its polygons, shoelace formula), Tensor[N]."""
        areas = []
        for polygons_per_instance in self.polygons:
            a = 0.0
            for p in polygons_per_instance:
                x, y = p[0::2], p[1::2]
                a += 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
            areas.append(a)
        return torch.tensor(areas)

    @staticmethod
    def cat(polymasks_list: List["PolygonMasks"]) -> "PolygonMasks":
        return PolygonMasks([p for pm in polymasks_list for p in pm.polygons])
