"""Pictures of detections: masks, boxes, labels and keypoints drawn over an image.

    picture = draw_instances(image_rgb, boxes, scores, classes, class_names,
                             masks=masks, keypoints=keypoints, skeleton=[(0, 1), ...])
    save_image(picture, "out/photo.png")

The result has the input's exact size and, away from what is drawn, its exact
pixels: mask fills are blended in numpy (per pixel, no resampling), and the
outlines, boxes, text and keypoints are rendered by matplotlib's Agg backend on
a figure of one canvas pixel per image pixel. Drawing is deterministic: the
colour of an instance depends only on its index in the inputs, so the same
detections always give the same picture, whatever the score threshold hides.
"""
import math
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

__all__ = ["draw_instances", "save_image", "instance_color", "skeleton_from_names"]

# Distinct, fairly saturated colours (RGB 0-255); instance i gets _PALETTE[i % len].
# Fixed rather than random so pictures are reproducible and comparable across runs.
_PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
    (220, 190, 255), (170, 110, 40), (255, 225, 25), (128, 0, 0), (170, 255, 195),
    (128, 128, 0), (255, 215, 180), (0, 0, 128), (255, 99, 71), (30, 144, 255),
)
_MASK_ALPHA = 0.5  # weight of the instance colour in a mask's fill
_LABEL_BACKGROUND = "black"
_LABEL_BACKGROUND_ALPHA = 0.8
# At 72 dpi one typographic point is one pixel, so sizes below are in image pixels.
_DPI = 72.0
# Keypoints whose score is at or below this are not drawn (detectron2's Visualizer uses 0.05).
KEYPOINT_THRESHOLD = 0.05

ArrayLike = Any  # np.ndarray, torch.Tensor or nested sequences


# ----------------------------------------------------------------------------- inputs


def _to_numpy(value: ArrayLike) -> np.ndarray:
    """np.ndarray from a numpy array, a (possibly CUDA / grad-tracking) torch tensor or a sequence."""
    if hasattr(value, "detach"):  # a torch.Tensor; avoids importing torch here
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _as_rgb_uint8(image: ArrayLike) -> np.ndarray:
    """A writable HxWx3 uint8 copy of an HxWx3 (RGB), HxWx1 or HxW (grey) uint8 image."""
    image = _to_numpy(image)
    if image.dtype != np.uint8:
        raise ValueError(f"draw_instances needs a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"draw_instances needs an HxWx3 RGB image, got shape {tuple(image.shape)}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.array(image, dtype=np.uint8, copy=True)


def _instance_arrays(boxes: ArrayLike, scores: ArrayLike, classes: ArrayLike, masks: Optional[ArrayLike],
                     keypoints: Optional[ArrayLike], height: int, width: int
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """The per-instance inputs as numpy arrays, checked for consistent counts and sizes."""
    boxes_np = _to_numpy(boxes).astype(np.float64).reshape(-1, 4)
    scores_np = _to_numpy(scores).astype(np.float64).reshape(-1)
    classes_np = _to_numpy(classes).astype(np.int64).reshape(-1)
    n = len(boxes_np)
    if len(scores_np) != n or len(classes_np) != n:
        raise ValueError(f"draw_instances got {n} boxes, {len(scores_np)} scores and {len(classes_np)} classes")
    masks_np = None
    if masks is not None:
        masks_np = _to_numpy(masks).astype(bool)
        if masks_np.shape != (n, height, width):
            raise ValueError(f"masks must be [N={n}, H={height}, W={width}] (full-image), "
                             f"got {tuple(masks_np.shape)}")
    keypoints_np = None
    if keypoints is not None:
        keypoints_np = _to_numpy(keypoints).astype(np.float64)
        if keypoints_np.ndim != 3 or keypoints_np.shape[0] != n or keypoints_np.shape[2] != 3:
            raise ValueError(f"keypoints must be [N={n}, K, 3] (x, y, score), got {tuple(keypoints_np.shape)}")
    return boxes_np, scores_np, classes_np, masks_np, keypoints_np


# ----------------------------------------------------------------------------- colours and names


def instance_color(index: int) -> Tuple[float, float, float]:
    """The RGB colour (0-1 floats) of the instance at `index` in draw_instances' inputs."""
    r, g, b = _PALETTE[index % len(_PALETTE)]
    return r / 255.0, g / 255.0, b / 255.0


def _class_name(class_names: Sequence[str], class_id: int) -> str:
    """The name of a class id, or "class_<id>" when the list does not cover it."""
    if 0 <= class_id < len(class_names):
        return str(class_names[class_id])
    return f"class_{class_id}"


def skeleton_from_names(keypoint_names: Sequence[str], rules: Sequence[Sequence[Any]]) -> List[Tuple[int, int]]:
    """Index pairs for draw_instances' `skeleton` from name pairs.

    rules: detectron2's keypoint_connection_rules ((name_a, name_b, colour) triples)
    or the exported metadata's [name_a, name_b] pairs; only the names are used.
    Raises ValueError naming a keypoint the names list lacks.
    """
    index = {name: i for i, name in enumerate(keypoint_names)}
    pairs: List[Tuple[int, int]] = []
    for rule in rules:
        a, b = rule[0], rule[1]
        for name in (a, b):
            if name not in index:
                raise ValueError(f"Skeleton rule {tuple(rule)!r} names keypoint {name!r}, which is not in "
                                 f"the keypoint names {list(keypoint_names)}")
        pairs.append((index[a], index[b]))
    return pairs


# ----------------------------------------------------------------------------- drawing


def _blend_masks(image: np.ndarray, masks: np.ndarray, order: Sequence[int]) -> None:
    """Tints each instance's mask pixels toward its colour, in place, largest first so small ones stay visible."""
    for i in order:
        mask = masks[i]
        color = np.array(instance_color(i)) * 255.0
        pixels = image[mask].astype(np.float64)
        image[mask] = np.round((1.0 - _MASK_ALPHA) * pixels + _MASK_ALPHA * color).astype(np.uint8)


def _new_canvas(image: np.ndarray) -> Tuple[Figure, FigureCanvasAgg, Any]:
    """A figure of exactly one canvas pixel per image pixel, with the image filling the axes.

    A Figure with its own Agg canvas (not pyplot) leaves the caller's matplotlib
    backend and global figure list alone and is freed with the figure.
    """
    h, w = image.shape[:2]
    # Agg truncates the canvas size to whole pixels; a hundredth of a pixel more keeps
    # w/dpi*dpi from landing on w - 1 through float rounding.
    fig = Figure(figsize=((w + 0.01) / _DPI, (h + 0.01) / _DPI), dpi=_DPI, frameon=False)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    # extent (0, w, h, 0): data coordinates are continuous pixel coordinates, pixel (x, y)
    # covering [x, x + 1) x [y, y + 1), as boxes and keypoints are given.
    ax.imshow(image, extent=(0, w, h, 0), interpolation="nearest", resample=False)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    return fig, canvas, ax


def _draw_outline(ax: Any, mask: np.ndarray, color: Tuple[float, float, float], linewidth: float) -> None:
    """The mask's boundary as a contour, computed on its bounding region only (whole-image contours are slow)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    h, w = mask.shape
    y0, y1 = max(int(ys.min()) - 1, 0), min(int(ys.max()) + 2, h)
    x0, x1 = max(int(xs.min()) - 1, 0), min(int(xs.max()) + 2, w)
    crop = np.zeros((y1 - y0 + 2, x1 - x0 + 2), dtype=np.float64)  # a zero border closes the contour
    crop[1:-1, 1:-1] = mask[y0:y1, x0:x1]
    # Contour samples sit at pixel centres (x + 0.5, y + 0.5); the border sits one pixel further out.
    grid_x = np.arange(x0 - 1, x1 + 1) + 0.5
    grid_y = np.arange(y0 - 1, y1 + 1) + 0.5
    ax.contour(grid_x, grid_y, crop, levels=[0.5], colors=[color], linewidths=linewidth)


def _draw_box(ax: Any, box: np.ndarray, color: Tuple[float, float, float], linewidth: float) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=linewidth))


def _draw_label(ax: Any, box: np.ndarray, text: str, font_size: float, image_w: int) -> None:
    """White text on a dark box at the box's top-left: above the box, or inside it at the image's top edge."""
    x0, y0 = float(box[0]), float(box[1])
    pad = max(1.0, font_size * 0.15)
    # Keep the label on the picture: shift it left when it would run off the right edge
    # (0.62 em is a generous average glyph width for DejaVu Sans).
    text_w = 0.62 * font_size * len(text) + 2 * pad
    x = max(0.0, min(x0, image_w - text_w))
    above = y0 >= font_size * 1.4 + 2 * pad
    ax.text(x + pad, y0 - pad if above else y0 + pad, text, color="white", fontsize=font_size,
            family="DejaVu Sans", ha="left", va="bottom" if above else "top",
            bbox={"facecolor": _LABEL_BACKGROUND, "alpha": _LABEL_BACKGROUND_ALPHA, "pad": pad,
                  "edgecolor": "none"})


def _keypoint_color(color: Tuple[float, float, float]) -> Tuple[float, float, float]:
    """The instance colour mixed halfway to white: keypoints drawn in the plain colour vanish
    into their own mask's tint."""
    return tuple(0.5 * (c + 1.0) for c in color)  # type: ignore[return-value]


def _draw_keypoints(ax: Any, keypoints: np.ndarray, skeleton: Sequence[Tuple[int, int]],
                    color: Tuple[float, float, float], linewidth: float, threshold: float) -> None:
    """Skeleton lines between visible keypoint pairs, then the visible keypoints as dots on top."""
    visible = keypoints[:, 2] > threshold
    num = len(keypoints)
    light = _keypoint_color(color)
    for a, b in skeleton:
        if 0 <= a < num and 0 <= b < num and visible[a] and visible[b]:
            ax.plot([keypoints[a, 0], keypoints[b, 0]], [keypoints[a, 1], keypoints[b, 1]], color=light,
                    linewidth=linewidth, solid_capstyle="round")
    if visible.any():
        ax.plot(keypoints[visible, 0], keypoints[visible, 1], linestyle="none", marker="o",
                markersize=max(5.0, 3.0 * linewidth), markerfacecolor=light, markeredgecolor="black",
                markeredgewidth=max(0.75, linewidth / 2))


def _render(fig: Figure, canvas: FigureCanvasAgg, height: int, width: int) -> np.ndarray:
    """The figure as HxWx3 uint8 RGB."""
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    if rgba.shape[0] < height or rgba.shape[1] < width:
        raise RuntimeError(f"matplotlib rendered {rgba.shape[1]}x{rgba.shape[0]} pixels for a "
                           f"{width}x{height} image")
    return np.ascontiguousarray(rgba[:height, :width, :3])


def _sizes(height: int, width: int) -> Tuple[float, float]:
    """(font size, line width) in pixels, growing with the image so labels stay readable."""
    scale = math.sqrt(height * width)
    return max(9.0, round(scale / 70.0)), max(1.0, scale / 500.0)


def draw_instances(image_rgb: ArrayLike, boxes: ArrayLike, scores: ArrayLike, classes: ArrayLike,
                   class_names: Sequence[str], masks: Optional[ArrayLike] = None,
                   keypoints: Optional[ArrayLike] = None, skeleton: Optional[Sequence[Tuple[int, int]]] = None,
                   score_threshold: float = 0.5, keypoint_threshold: float = KEYPOINT_THRESHOLD) -> np.ndarray:
    """Draws the instances whose score is >= score_threshold on a copy of the image.

    image_rgb: HxWx3 uint8 RGB (HxW / HxWx1 grey also accepted).
    boxes: [N, 4] XYXY in image pixels; scores [N]; classes [N] indices into class_names
    ("class_<i>" for ids beyond it). masks: optional [N, H, W] bool / 0-1 full-image masks,
    drawn as translucent fills with an outline. keypoints: optional [N, K, 3] (x, y, score),
    drawn as dots (score > keypoint_threshold) joined by the `skeleton` (index pairs).
    numpy arrays and torch tensors are accepted. Labels read "name 97%" on a dark box.
    Returns HxWx3 uint8 RGB of the input's size; the input is not modified.
    """
    image = _as_rgb_uint8(image_rgb)
    h, w = image.shape[:2]
    boxes_np, scores_np, classes_np, masks_np, keypoints_np = _instance_arrays(
        boxes, scores, classes, masks, keypoints, h, w)
    kept = np.flatnonzero(scores_np >= score_threshold)
    # Largest first, so smaller instances are drawn over (and not hidden by) larger ones.
    areas = (boxes_np[:, 2] - boxes_np[:, 0]) * (boxes_np[:, 3] - boxes_np[:, 1])
    order = [int(i) for i in kept[np.argsort(-areas[kept], kind="stable")]]
    if masks_np is not None:
        _blend_masks(image, masks_np, order)
    if not order:
        return image  # nothing to draw over the image: skip matplotlib entirely
    font_size, linewidth = _sizes(h, w)
    fig, canvas, ax = _new_canvas(image)
    for i in order:
        color = instance_color(i)
        if masks_np is not None:
            _draw_outline(ax, masks_np[i], color, linewidth)
        _draw_box(ax, boxes_np[i], color, linewidth)
        if keypoints_np is not None:
            _draw_keypoints(ax, keypoints_np[i], skeleton or (), color, linewidth * 1.5, keypoint_threshold)
    # Labels last, so no box or outline of another instance crosses them.
    for i in order:
        text = f"{_class_name(class_names, int(classes_np[i]))} {scores_np[i] * 100:.0f}%"
        _draw_label(ax, boxes_np[i], text, font_size, w)
    return _render(fig, canvas, h, w)


# ----------------------------------------------------------------------------- saving


def save_image(array: ArrayLike, path: Union[str, os.PathLike]) -> Path:
    """Writes an HxWx3 (RGB), HxWx4 (RGBA) or HxW (grey) uint8 array as a PNG; returns the path.

    Parent folders are created. The file is written beside the target and renamed
    into place, so an interrupted run never leaves a truncated picture.
    """
    data = _to_numpy(array)
    if data.dtype != np.uint8 or not (data.ndim == 2 or (data.ndim == 3 and data.shape[2] in (3, 4))):
        raise ValueError(f"save_image needs an HxW, HxWx3 or HxWx4 uint8 array, got shape "
                         f"{tuple(data.shape)} dtype {data.dtype}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A per-process name beside the target (same file system, so the rename is atomic);
    # opened normally rather than with mkstemp so the file gets the usual umask permissions.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(np.ascontiguousarray(data)).save(tmp, format="PNG")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
