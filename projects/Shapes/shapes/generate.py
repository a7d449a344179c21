"""Seeded generator of the Shapes dataset: synthetic images with instance masks and keypoints.

An image is a textured, low-contrast background with 1 to 5 filled shapes
(circle, square, triangle, star) of random size, rotation and colour, drawn one
after the other, so later shapes occlude earlier ones. Per instance:

    category   one of CLASS_NAMES
    mask       bool [H, W], the VISIBLE pixels (no pixel belongs to two instances)
    box        (x0, y0, x1, y1) tight around the visible mask, pixel-edge convention:
               x0 = min column, x1 = max column + 1 (so x1 - x0 is the width in pixels)
    keypoints  int64 [4, 3]: (x, y, v) for the extreme points of the FULL shape in the
               order of KEYPOINT_NAMES (top, bottom, left, right); x, y are integer
               pixel indices (COCO json convention: the pixel centre is x + 0.5);
               v = 2 when the point's pixel is visible, 1 when a later shape covers it.

Geometry is continuous: pixel (row i, column j) covers [j, j+1) x [i, i+1) and
belongs to a shape when its centre (j + 0.5, i + 0.5) lies inside the shape.

Every image is drawn from its own generator seeded with (seed, index), so an
image does not depend on how many images come before it and a split is the
same for a seed whatever the machine.
"""
import colorsys
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

__all__ = ["CLASS_NAMES", "KEYPOINT_NAMES", "KEYPOINT_FLIP_MAP", "SKELETON", "GENERATOR_VERSION",
           "ShapeParams", "ShapeInstance", "generate_image", "generate_split", "rasterize_shape",
           "extreme_points", "write_coco", "coco_categories"]

# Bump when the drawing changes in a way the parameters do not capture: the
# dataset cache folder name includes it, so cached splits are regenerated.
GENERATOR_VERSION = 1

CLASS_NAMES: Tuple[str, ...] = ("circle", "square", "triangle", "star")

# The "left_"/"right_" prefixes are what the project's COCO loader uses to derive
# the horizontal-flip map from keypoint names (see builtin_meta.py), so these
# names make a flipped "left" point become the "right" one; top and bottom stay.
KEYPOINT_NAMES: Tuple[str, ...] = ("top_extreme", "bottom_extreme", "left_extreme", "right_extreme")
KEYPOINT_FLIP_MAP: Tuple[Tuple[str, str], ...] = (("left_extreme", "right_extreme"),)
# 1-based keypoint index pairs, as in COCO: top-left-bottom-right-top (the outline).
SKELETON: Tuple[Tuple[int, int], ...] = ((1, 3), (3, 2), (2, 4), (4, 1))


@dataclass(frozen=True)
class ShapeParams:
    """Everything that decides what the generator draws (a cache folder is named by its digest).

    Sizes are circumradii in pixels: a shape's extent is at most twice its radius.
    A new shape is placed only where it leaves every earlier one at least
    `min_visible_fraction` of its area and `min_visible_pixels` pixels visible;
    otherwise another placement is tried (rather than leaving an unlabelled
    fragment in the image, which would teach the model to ignore real shapes).
    """

    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 5
    min_radius: float = 7.0  # the smallest triangle is then ~11 px tall, a star ~13 px wide
    max_radius: float = 30.0
    star_inner_ratio: float = 0.5  # inner / outer radius; 0.5 keeps small stars' points visible
    min_visible_fraction: float = 0.3
    min_visible_pixels: int = 40
    placement_tries: int = 30
    # Colours: Euclidean RGB distance of a shape's colour to the background's
    # base colour and to every other shape's colour in the image, so edges stay visible.
    min_background_contrast: float = 90.0
    min_shape_contrast: float = 60.0
    background_amplitude: Tuple[float, float] = (8.0, 22.0)  # texture strength range, grey levels
    shape_shading: float = 12.0  # +- grey levels of a linear shading across each shape
    pixel_noise: float = 3.0  # std of the per-pixel noise over the whole image

    def digest(self) -> str:
        """Short hash of the parameters and GENERATOR_VERSION (stable across runs and machines)."""
        text = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


@dataclass
class ShapeInstance:
    """One drawn shape: its class, visible mask, tight box and keypoints (see the module docstring).

    center, radius and angle describe the full shape (continuous coordinates,
    radians), so its full outline can be redrawn with `rasterize_shape`.
    """

    category: str
    mask: np.ndarray
    box: Tuple[int, int, int, int]
    keypoints: np.ndarray
    center: Tuple[float, float]
    radius: float
    angle: float
    color: Tuple[int, int, int] = (0, 0, 0)  # fill colour (RGB) before shading and noise

    @property
    def category_id(self) -> int:
        """COCO category id, 1-based in CLASS_NAMES order."""
        return CLASS_NAMES.index(self.category) + 1


# ----------------------------------------------------------------------------- geometry


def _pixel_centres(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """x and y of every pixel centre, each [size, size] float64."""
    c = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(c, c, indexing="xy")


def _polygon_vertices(category: str, center: Tuple[float, float], radius: float, angle: float,
                      star_inner_ratio: float) -> np.ndarray:
    """Vertices [N, 2] (x, y) of a square / triangle / star with circumradius `radius`."""
    if category == "square":
        angles, radii = angle + np.arange(4) * (np.pi / 2), np.full(4, radius)
    elif category == "triangle":
        angles, radii = angle + np.arange(3) * (2 * np.pi / 3), np.full(3, radius)
    elif category == "star":
        angles = angle + np.arange(10) * (np.pi / 5)
        radii = np.where(np.arange(10) % 2 == 0, radius, radius * star_inner_ratio)
    else:
        raise ValueError(f"No polygon for category {category!r}")
    return np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], axis=1)


def _inside_polygon(px: np.ndarray, py: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points (px, py) lie inside the polygon (handles the non-convex star)."""
    inside = np.zeros(px.shape, dtype=bool)
    x1, y1 = vertices[:, 0], vertices[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    for ax, ay, bx, by in zip(x1, y1, x2, y2):
        if ay == by:  # a horizontal edge never crosses a horizontal ray
            continue
        crosses = (ay > py) != (by > py)
        x_cross = ax + (py - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (px < x_cross)
    return inside


def rasterize_shape(category: str, center: Tuple[float, float], radius: float, angle: float,
                    image_size: int, star_inner_ratio: float = ShapeParams.star_inner_ratio) -> np.ndarray:
    """Full (unoccluded) mask bool [image_size, image_size] of one shape: pixels whose centre is inside."""
    px, py = _pixel_centres(image_size)
    if category == "circle":
        return (px - center[0]) ** 2 + (py - center[1]) ** 2 <= radius ** 2
    return _inside_polygon(px, py, _polygon_vertices(category, center, radius, angle, star_inner_ratio))


def _run_middle(indices: np.ndarray) -> int:
    """The index nearest the middle of a sorted set of pixel indices along an extreme row/column.

    A flat edge (an axis-aligned square's top) has many extreme pixels; its
    middle is the stable choice. Taking the nearest member, not the mean,
    keeps the point on the shape when the extreme row has two separate runs
    (two star points at the same height).
    """
    middle = (indices[0] + indices[-1]) / 2.0
    return int(indices[np.argmin(np.abs(indices - middle))])


def extreme_points(full_mask: np.ndarray) -> np.ndarray:
    """Integer pixel (x, y) [4, 2] of the top, bottom, left and right extreme points of a non-empty mask."""
    rows = np.flatnonzero(full_mask.any(axis=1))
    cols = np.flatnonzero(full_mask.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    return np.array([
        [_run_middle(np.flatnonzero(full_mask[top])), top],
        [_run_middle(np.flatnonzero(full_mask[bottom])), bottom],
        [left, _run_middle(np.flatnonzero(full_mask[:, left]))],
        [right, _run_middle(np.flatnonzero(full_mask[:, right]))],
    ], dtype=np.int64)


def _tight_box(mask: np.ndarray) -> Tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a non-empty mask, pixel-edge convention (max index + 1)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# ----------------------------------------------------------------------------- colours and textures


def _random_color(rng: np.random.Generator) -> np.ndarray:
    """A saturated-enough colour (HSV sampling spreads hues evenly), float64 RGB in [0, 255]."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.35, 1.0), rng.uniform(0.3, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def _pick_color(rng: np.random.Generator, background: np.ndarray, others: Sequence[np.ndarray],
                params: ShapeParams, tries: int = 50) -> np.ndarray:
    """A colour contrasting with the background and the other shapes (the last try if none does)."""
    color = _random_color(rng)
    for _ in range(tries):
        if (np.linalg.norm(color - background) >= params.min_background_contrast
                and all(np.linalg.norm(color - o) >= params.min_shape_contrast for o in others)):
            return color
        color = _random_color(rng)
    return color


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blobby noise in about [-1, 1]: a coarse random grid upsampled bicubically."""
    cells = int(rng.integers(3, 12))
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC), dtype=np.float64)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One of: smooth noise, a linear gradient, stripes; [size, size] in about [-1, 1]."""
    px, py = _pixel_centres(size)
    kind = int(rng.integers(3))
    if kind == 0:
        return _smooth_noise(rng, size)
    direction = rng.uniform(0, 2 * np.pi)
    along = (px * np.cos(direction) + py * np.sin(direction)) / size  # about [-1.4, 1.4]
    if kind == 1:
        return along - along.mean()
    period = rng.uniform(5.0, 20.0) / size
    return np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))


def _background(rng: np.random.Generator, params: ShapeParams) -> Tuple[np.ndarray, np.ndarray]:
    """(image float64 [H, W, 3], base colour [3]): a muted base colour plus a low-contrast texture."""
    size = params.image_size
    base = rng.uniform(40, 215, 3)
    amplitude = rng.uniform(*params.background_amplitude)
    # A slightly different texture weight per channel gives colour variation, not just brightness.
    tint = rng.uniform(0.6, 1.0, 3)
    image = base[None, None, :] + amplitude * _texture(rng, size)[:, :, None] * tint[None, None, :]
    return image, base


def _shaded_fill(rng: np.random.Generator, color: np.ndarray, params: ShapeParams) -> np.ndarray:
    """[H, W, 3] fill of one shape: its colour with a linear shading (shapes are not flat stickers)."""
    px, py = _pixel_centres(params.image_size)
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (px * np.cos(direction) + py * np.sin(direction)) / params.image_size
    return color[None, None, :] + params.shape_shading * (ramp - ramp.mean())[:, :, None]


# ----------------------------------------------------------------------------- one image


@dataclass
class _Placed:
    """A shape accepted into the image, before its final visible mask is known."""

    category: str
    center: Tuple[float, float]
    radius: float
    angle: float
    full_mask: np.ndarray
    color: np.ndarray


def _propose_shape(rng: np.random.Generator, params: ShapeParams) -> Tuple[str, Tuple[float, float], float, float]:
    """Random (category, centre, radius, angle) with the whole shape inside the image."""
    category = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
    radius = float(rng.uniform(params.min_radius, params.max_radius))
    # A one-pixel margin keeps every shape, and so every keypoint, strictly inside.
    low, high = radius + 1.0, params.image_size - radius - 1.0
    center = (float(rng.uniform(low, high)), float(rng.uniform(low, high)))
    angle = float(rng.uniform(0, 2 * np.pi))
    return category, center, radius, angle


def _occlusion_ok(owner: np.ndarray, placed: List[_Placed], new_mask: np.ndarray, params: ShapeParams) -> bool:
    """Whether every earlier shape keeps enough visible pixels once `new_mask` is drawn on top."""
    for k, shape in enumerate(placed):
        visible = np.count_nonzero((owner == k) & ~new_mask)
        full = np.count_nonzero(shape.full_mask)
        if visible < params.min_visible_pixels or visible < params.min_visible_fraction * full:
            return False
    return True


def _place_shapes(rng: np.random.Generator, params: ShapeParams, background_color: np.ndarray
                  ) -> Tuple[List[_Placed], np.ndarray]:
    """Shapes in drawing order and the owner map [H, W] (index of the shape seen at a pixel, -1 none)."""
    owner = np.full((params.image_size, params.image_size), -1, dtype=np.int64)
    placed: List[_Placed] = []
    target = int(rng.integers(params.min_objects, params.max_objects + 1))
    for _ in range(target):
        for _ in range(params.placement_tries):
            category, center, radius, angle = _propose_shape(rng, params)
            mask = rasterize_shape(category, center, radius, angle, params.image_size, params.star_inner_ratio)
            if np.count_nonzero(mask) >= params.min_visible_pixels and _occlusion_ok(owner, placed, mask, params):
                break
        else:
            continue  # no acceptable spot for this one: the image gets fewer shapes
        color = _pick_color(rng, background_color, [p.color for p in placed], params)
        owner[mask] = len(placed)
        placed.append(_Placed(category, center, radius, angle, mask, color))
    return placed, owner


def _instances(placed: List[_Placed], owner: np.ndarray) -> List[ShapeInstance]:
    """Final per-instance visible mask, tight box and keypoints with visibility."""
    out = []
    for k, shape in enumerate(placed):
        visible = owner == k
        points = extreme_points(shape.full_mask)
        flags = np.where(visible[points[:, 1], points[:, 0]], 2, 1)
        out.append(ShapeInstance(
            category=shape.category, mask=visible, box=_tight_box(visible),
            keypoints=np.concatenate([points, flags[:, None]], axis=1).astype(np.int64),
            center=shape.center, radius=shape.radius, angle=shape.angle,
            color=tuple(int(c) for c in np.clip(np.rint(shape.color), 0, 255))))
    return out


def generate_image(seed: int, index: int, params: Optional[ShapeParams] = None
                   ) -> Tuple[np.ndarray, List[ShapeInstance]]:
    """Image `index` of the split seeded `seed`: (uint8 [H, W, 3] RGB, instances in drawing order)."""
    params = params or ShapeParams()
    rng = np.random.default_rng([seed, index])
    image, background_color = _background(rng, params)
    placed, owner = _place_shapes(rng, params, background_color)
    for k, shape in enumerate(placed):
        visible = owner == k
        image[visible] = _shaded_fill(rng, shape.color, params)[visible]
    image += rng.normal(0.0, params.pixel_noise, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), _instances(placed, owner)


def generate_split(num_images: int, seed: int, params: Optional[ShapeParams] = None
                   ) -> Tuple[List[np.ndarray], List[List[ShapeInstance]]]:
    """`num_images` images and their instance lists, deterministic for (seed, params)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy seed sequences take non-negative ints), got {seed}")
    images, instances = [], []
    for index in range(num_images):
        image, shapes = generate_image(seed, index, params)
        images.append(image)
        instances.append(shapes)
    return images, instances


# ----------------------------------------------------------------------------- COCO json


def coco_categories() -> List[Dict[str, object]]:
    """The json's categories: ids 1..4, with keypoint names and skeleton on each (all share them)."""
    return [{"id": i + 1, "name": name, "supercategory": "shape", "keypoints": list(KEYPOINT_NAMES),
             "skeleton": [list(pair) for pair in SKELETON]} for i, name in enumerate(CLASS_NAMES)]


def _annotation(shape: ShapeInstance, ann_id: int, image_id: int) -> Dict[str, object]:
    """One COCO annotation: RLE of the visible mask, XYWH box, visible area, flat keypoints."""
    rle = mask_util.encode(np.asfortranarray(shape.mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")  # json cannot hold bytes
    x0, y0, x1, y1 = shape.box
    keypoints = [int(v) for v in shape.keypoints.reshape(-1)]
    return {"id": ann_id, "image_id": image_id, "category_id": shape.category_id, "segmentation": rle,
            "area": int(np.count_nonzero(shape.mask)), "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0,
            "keypoints": keypoints, "num_keypoints": int(np.count_nonzero(shape.keypoints[:, 2]))}


def write_coco(split_dir: os.PathLike, images: Sequence[np.ndarray],
               instances: Sequence[Sequence[ShapeInstance]], info: Optional[Dict[str, object]] = None) -> Path:
    """Writes split_dir/images/NNNNNN.png and split_dir/annotations.json; returns the json path.

    Image and annotation ids start at 1: COCOeval treats an annotation id of 0 as "unmatched".
    The json is written last, through a temporary file, so its presence means the split is complete.
    """
    split_dir = Path(split_dir)
    image_dir = split_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    coco_images, annotations = [], []
    for index, (image, shapes) in enumerate(zip(images, instances)):
        image_id, file_name = index + 1, f"{index:06d}.png"
        Image.fromarray(image).save(image_dir / file_name)
        coco_images.append({"id": image_id, "file_name": file_name,
                            "height": int(image.shape[0]), "width": int(image.shape[1])})
        for shape in shapes:
            annotations.append(_annotation(shape, len(annotations) + 1, image_id))
    dataset = {"info": dict(info or {}, description="Shapes: synthetic shapes with masks and extreme points"),
               "images": coco_images, "annotations": annotations, "categories": coco_categories()}
    json_file = split_dir / "annotations.json"
    tmp = split_dir / "annotations.json.tmp"
    tmp.write_text(json.dumps(dataset))
    os.replace(tmp, json_file)
    return json_file
