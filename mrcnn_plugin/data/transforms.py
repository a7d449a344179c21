"""Augmentations (random choices) and the deterministic fvcore Transforms they produce.

An `Augmentation` looks at an image and returns a `Transform`; the Transform
then applies the same geometric change to the image, boxes, polygons, masks
and keypoints. Randomness comes from numpy's global generator (seeded by the
trainer from cfg.SEED, and per data-loader worker), as in detectron2.

Transforms used here: fvcore's HFlipTransform / VFlipTransform / NoOpTransform
/ TransformList, plus
  - `ResizeTransform`: PIL bilinear on uint8 images. detectron2 resizes with
    PIL, whose bilinear filter antialiases when shrinking; fvcore's
    ScaleTransform uses torch.interpolate, which does not, so pixels differ.
  - `CropTransform`: fvcore's crop with polygons clipped to the crop window by
    Sutherland-Hodgman here, so shapely is not needed.
"""
import sys
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from fvcore.transforms.transform import (CropTransform as _FvcoreCropTransform, HFlipTransform,
                                         NoOpTransform, Transform, TransformList, VFlipTransform)
from PIL import Image

__all__ = ["Augmentation", "ResizeShortestEdge", "RandomFlip", "RandomCrop", "ResizeTransform",
           "CropTransform", "apply_augmentations", "resize_shortest_edge_size",
           "HFlipTransform", "VFlipTransform", "NoOpTransform", "Transform", "TransformList"]


# ----------------------------------------------------------------------------- transforms


class ResizeTransform(Transform):
    """Resizes an (h, w) image to (new_h, new_w); coordinates scale by new/old.

    uint8 images go through PIL with `interp` (a PIL filter, default bilinear);
    other dtypes through torch.interpolate. Masks use nearest neighbour.
    """

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: int = Image.BILINEAR):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray, interp: int = None) -> np.ndarray:
        """img: HxW or HxWxC array of size (h, w) -> same layout and dtype, (new_h, new_w)."""
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"ResizeTransform built for a {self.h}x{self.w} image got one of shape {img.shape}")
        interp = self.interp if interp is None else interp
        if img.dtype == np.uint8 and (img.ndim == 2 or img.shape[2] in (1, 3, 4)):
            return self._resize_pil(img, interp)
        return self._resize_torch(img, interp)

    def _resize_pil(self, img: np.ndarray, interp: int) -> np.ndarray:
        single_channel = img.ndim == 3 and img.shape[2] == 1
        pil = Image.fromarray(np.ascontiguousarray(img[:, :, 0] if single_channel else img))
        out = np.asarray(pil.resize((self.new_w, self.new_h), interp))
        return out[:, :, None] if single_channel else out

    def _resize_torch(self, img: np.ndarray, interp: int) -> np.ndarray:
        mode = {Image.NEAREST: "nearest", Image.BILINEAR: "bilinear", Image.BICUBIC: "bicubic"}[interp]
        t = torch.from_numpy(np.ascontiguousarray(img)).float()
        t = t[None, None] if img.ndim == 2 else t.permute(2, 0, 1)[None]
        align = None if mode == "nearest" else False
        out = F.interpolate(t, size=(self.new_h, self.new_w), mode=mode, align_corners=align)[0]
        out = out[0] if img.ndim == 2 else out.permute(1, 2, 0)
        return out.numpy().astype(img.dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        """coords: [N, 2] (x, y) -> scaled in place and returned."""
        coords[:, 0] = coords[:, 0] * (self.new_w * 1.0 / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h * 1.0 / self.h)
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """A label map or mask (HxW, integer or bool) resized with nearest neighbour."""
        if segmentation.dtype == bool:
            return self.apply_image(segmentation.astype(np.uint8), interp=Image.NEAREST).astype(bool)
        return self.apply_image(segmentation, interp=Image.NEAREST)

    def inverse(self) -> Transform:
        return ResizeTransform(self.new_h, self.new_w, self.h, self.w, self.interp)


def _clip_polygon(points: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Sutherland-Hodgman: polygon points [N, 2] clipped to the box [x0, x1] x [y0, y1] -> [M, 2].

    A concave polygon that leaves and re-enters the box comes back as one
    polygon joined by zero-width runs along the border, which rasterises to the
    same pixels as the separate pieces.
    """
    # Each edge of the box: (coordinate axis, bound, keep points >= bound?).
    for axis, bound, keep_above in ((0, x0, True), (0, x1, False), (1, y0, True), (1, y1, False)):
        if len(points) == 0:
            break
        inside = points[:, axis] >= bound if keep_above else points[:, axis] <= bound
        out: List[np.ndarray] = []
        for i in range(len(points)):
            cur, prev = points[i], points[i - 1]
            if inside[i] != inside[i - 1]:
                t = (bound - prev[axis]) / (cur[axis] - prev[axis])
                out.append(prev + t * (cur - prev))
            if inside[i]:
                out.append(cur)
        points = np.asarray(out, dtype=np.float64).reshape(-1, 2)
    return points


def _polygon_area(points: np.ndarray) -> float:
    """Shoelace area of a polygon [N, 2]."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


class CropTransform(_FvcoreCropTransform):
    """img[y0:y0+h, x0:x0+w]; polygons are clipped to the window, empty pieces dropped."""

    def apply_polygons(self, polygons: list) -> list:
        """polygons: list of [N, 2] arrays in image pixels -> clipped, shifted into the crop."""
        out = []
        for p in polygons:
            clipped = _clip_polygon(np.asarray(p, dtype=np.float64).reshape(-1, 2),
                                    self.x0, self.y0, self.x0 + self.w, self.y0 + self.h)
            if len(clipped) >= 3 and _polygon_area(clipped) > 0:
                out.append(self.apply_coords(clipped))
        return out


# ----------------------------------------------------------------------------- augmentations


class Augmentation:
    """Draws a random Transform for an image: subclasses implement `get_transform`."""

    def get_transform(self, image: np.ndarray) -> Transform:
        """image: HxWxC (or HxW) array -> the Transform to apply to it and its annotations."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def resize_shortest_edge_size(h: int, w: int, short_edge: int, max_size: float) -> Tuple[int, int]:
    """(new_h, new_w) with the short side `short_edge`, the long side at most `max_size`.

    detectron2's arithmetic: scale = short_edge / min(h, w); if the long side
    would exceed max_size, scale both sides down so it equals max_size; round
    each side with int(x + 0.5).
    """
    scale = short_edge * 1.0 / min(h, w)
    if h < w:
        new_h, new_w = float(short_edge), scale * w
    else:
        new_h, new_w = scale * h, float(short_edge)
    if max(new_h, new_w) > max_size:
        shrink = max_size * 1.0 / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


class ResizeShortestEdge(Augmentation):
    """Resize so the short side is a sampled length and the long side at most max_size.

    sample_style "choice": one of `short_edge_length`; "range": an integer in
    [short_edge_length[0], short_edge_length[1]]. A length of 0 means no resize.
    """

    def __init__(self, short_edge_length: Union[int, Sequence[int]], max_size: float = sys.maxsize,
                 sample_style: str = "range", interp: int = Image.BILINEAR):
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length, short_edge_length)
        short_edge_length = tuple(int(s) for s in short_edge_length)
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}")
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(f"sample_style 'range' needs (min, max), got {short_edge_length}")
        self.short_edge_length = short_edge_length
        self.max_size = max_size
        self.sample_style = sample_style
        self.interp = interp

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.sample_style == "range":
            size = int(np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1))
        else:
            size = int(np.random.choice(self.short_edge_length))
        if size == 0:
            return NoOpTransform()
        new_h, new_w = resize_shortest_edge_size(h, w, size, self.max_size)
        return ResizeTransform(h, w, new_h, new_w, self.interp)


class RandomFlip(Augmentation):
    """Flips horizontally (or vertically) with probability `prob`."""

    def __init__(self, prob: float = 0.5, *, horizontal: bool = True, vertical: bool = False):
        if horizontal == vertical:
            raise ValueError("RandomFlip flips either horizontally or vertically: set exactly one")
        self.prob = prob
        self.horizontal = horizontal
        self.vertical = vertical

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if np.random.uniform(0.0, 1.0) >= self.prob:
            return NoOpTransform()
        return HFlipTransform(w) if self.horizontal else VFlipTransform(h)


class RandomCrop(Augmentation):
    """A random window of the image, its size given by crop_type (INPUT.CROP.TYPE):

    "relative": (h * size[0], w * size[1]); "relative_range": a fraction drawn
    uniformly from [size[i], 1] per side; "absolute": size pixels (at most the
    image); "absolute_range": side lengths drawn from [size[0], size[1]] pixels.
    """

    _TYPES = ("relative_range", "relative", "absolute", "absolute_range")

    def __init__(self, crop_type: str, crop_size: Sequence[float]):
        if crop_type not in self._TYPES:
            raise ValueError(f"INPUT.CROP.TYPE must be one of {self._TYPES}, got {crop_type!r}")
        if crop_type == "absolute_range" and crop_size[0] > crop_size[1]:
            raise ValueError(f"absolute_range crop needs min <= max, got {tuple(crop_size)}")
        self.crop_type = crop_type
        self.crop_size = tuple(crop_size)

    def crop_size_for(self, h: int, w: int) -> Tuple[int, int]:
        """(crop_h, crop_w) for an h x w image (random for the *_range types)."""
        if self.crop_type == "relative":
            ch, cw = self.crop_size
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "relative_range":
            low = np.asarray(self.crop_size, dtype=np.float32)
            ch, cw = low + np.random.rand(2) * (1 - low)
            return int(h * ch + 0.5), int(w * cw + 0.5)
        if self.crop_type == "absolute":
            return min(int(self.crop_size[0]), h), min(int(self.crop_size[1]), w)
        lo, hi = int(self.crop_size[0]), int(self.crop_size[1])
        ch = np.random.randint(min(h, lo), min(h, hi) + 1)
        cw = np.random.randint(min(w, lo), min(w, hi) + 1)
        return int(ch), int(cw)

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        ch, cw = self.crop_size_for(h, w)
        y0 = int(np.random.randint(h - ch + 1))
        x0 = int(np.random.randint(w - cw + 1))
        return CropTransform(x0, y0, cw, ch, orig_w=w, orig_h=h)


def apply_augmentations(augmentations: Sequence[Union[Augmentation, Transform]],
                        image: np.ndarray) -> Tuple[np.ndarray, TransformList]:
    """Draws and applies each augmentation in turn (each sees the previous one's output).

    Returns (augmented image, the TransformList to apply to its annotations).
    Plain Transforms in the list are applied as they are.
    """
    transforms: List[Transform] = []
    for aug in augmentations:
        t = aug if isinstance(aug, Transform) else aug.get_transform(image)
        image = t.apply_image(image)
        transforms.append(t)
    return image, TransformList(transforms)
