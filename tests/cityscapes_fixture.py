"""A tiny Cityscapes split written in the official layout, with the geometry it was drawn from.

`make_cityscapes_split(root)` writes 3 images of 64 x 128 pixels in 2 cities:

    {root}/leftImg8bit/val/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    {root}/gtFine/val/{city}/{city}_{seq}_{frame}_gtFine_{polygons.json,instanceIds.png,labelIds.png}

Each image has a road (stuff) band, thing objects (rectangles placed at random in
their own cells of a 4 x 2 grid, and a triangle) of several classes, and, in
turn: a car group (crowd), a caravan (a class with instances that Cityscapes
does not evaluate) and a license plate (label id -1, never drawn); a car drawn
over the right half of a bus; a building (stuff) and a person drawn inside a
truck, leaving a hole in the truck's visible region. The json lists the objects in
drawing order; the instanceIds png is drawn from the same polygons in that order
with PIL (later objects cover earlier ones; individual objects get
label_id * 1000 + their number among the objects of that label, groups and stuff
the bare label id), as cityscapesscripts' json2instanceImg does; labelIds holds
the label id of every pixel. Each returned image carries the instances a loader
must find, with boxes computed from the drawn geometry.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from cityscapesscripts.helpers.labels import name2label
from PIL import Image, ImageDraw

HEIGHT, WIDTH = 64, 128
CELL_W, CELL_H = 32, 24  # the grid of cells holding one object each, rows 0..47
ROAD_TOP = 48

Point = Tuple[int, int]


@dataclass
class ExpectedInstance:
    """One annotation a loader must return: class name, crowd flag, box (x0, y0, x1, y1) of the
    visible pixels in continuous coordinates (pixel i spans [i, i + 1))."""
    name: str
    iscrowd: int
    box: Tuple[int, int, int, int]


@dataclass
class FixtureImage:
    key: str                 # {city}_{seq}_{frame}
    city: str
    image_file: str
    json_file: str
    instance_ids_file: str
    label_ids_file: str
    expected: List[ExpectedInstance] = field(default_factory=list)


@dataclass
class _Object:
    label: str               # json label, e.g. "car" or "cargroup"
    polygon: List[Point]     # integer vertices, drawn inclusively by PIL
    box: Optional[Tuple[int, int, int, int]] = None  # expected visible box (things only)


def _rect(x0: int, y0: int, w: int, h: int) -> List[Point]:
    """Polygon of the w x h pixels starting at (x0, y0) (PIL fills the vertices inclusively)."""
    return [(x0, y0), (x0 + w - 1, y0), (x0 + w - 1, y0 + h - 1), (x0, y0 + h - 1)]


def _box_of(polygon: Sequence[Point]) -> Tuple[int, int, int, int]:
    xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def _random_rect(rng: np.random.Generator, cell: int) -> Tuple[int, int, int, int]:
    """(x0, y0, w, h) of a rectangle of at least 14 x 12 pixels inside grid cell `cell` (0..7)."""
    cx, cy = (cell % 4) * CELL_W, (cell // 4) * CELL_H
    return (cx + int(rng.integers(1, 6)), cy + int(rng.integers(1, 4)),
            int(rng.integers(14, 25)), int(rng.integers(12, 19)))


def _thing(rng: np.random.Generator, label: str, cell: int) -> _Object:
    polygon = _rect(*_random_rect(rng, cell))
    return _Object(label, polygon, _box_of(polygon))


def _scenes(seed: int) -> Dict[Tuple[str, str, str], List[_Object]]:
    """The objects of each image, in drawing order."""
    rng = np.random.default_rng(seed)
    road = _Object("road", _rect(0, ROAD_TOP, WIDTH, HEIGHT - ROAD_TOP))

    triangle = [(CELL_W * 2 + 2, CELL_H - 3), (CELL_W * 3 - 4, CELL_H - 3), (CELL_W * 2 + 14, 2)]
    scene0 = [road, _thing(rng, "person", 0), _thing(rng, "car", 1),
              _Object("car", triangle, _box_of(triangle)), _thing(rng, "bicycle", 3),
              _thing(rng, "cargroup", 4), _Object("caravan", _rect(*_random_rect(rng, 5))),
              _Object("license plate", _rect(*_random_rect(rng, 6)))]

    # A bus in cell 4 whose right half a later car covers (the car reaches into the empty cell 5).
    bus_x0, bus_y0, bus_w, bus_h = 3, CELL_H + 3, 22, 16
    car_x0 = bus_x0 + bus_w // 2
    car = _rect(car_x0, bus_y0 - 1, 24, bus_h + 2)
    scene1 = [road, _thing(rng, "person", 0), _thing(rng, "rider", 1), _thing(rng, "truck", 2),
              _thing(rng, "motorcycle", 3),
              _Object("bus", _rect(bus_x0, bus_y0, bus_w, bus_h), (bus_x0, bus_y0, car_x0, bus_y0 + bus_h)),
              _Object("car", car, _box_of(car))]

    # A truck in cell 4 with a person drawn inside it: the truck's visible region has a hole.
    truck = _rect(2, CELL_H + 2, 26, 19)
    inner = _rect(10, CELL_H + 7, 8, 13)  # 104 pixels
    scene2 = [road, _thing(rng, "train", 0), _thing(rng, "motorcycle", 1), _thing(rng, "person", 2),
              _thing(rng, "person", 3), _thing(rng, "bicycle", 5), _thing(rng, "rider", 6),
              _Object("building", _rect(*_random_rect(rng, 7))),
              _Object("truck", truck, _box_of(truck)), _Object("person", inner, _box_of(inner))]
    return {("aachen", "000000", "000019"): scene0, ("aachen", "000001", "000019"): scene1,
            ("bochum", "000000", "000313"): scene2}


def _label_of(json_label: str) -> Tuple[object, bool]:
    """(cityscapesscripts Label, is a group) of a json label."""
    if json_label not in name2label and json_label.endswith("group"):
        return name2label[json_label[: -len("group")]], True
    return name2label[json_label], False


def _draw(objects: List[_Object]) -> Tuple[np.ndarray, List[Tuple[_Object, int]]]:
    """instanceIds image [H, W] int32 and (object, its id) of the drawn objects."""
    canvas = Image.new("I", (WIDTH, HEIGHT), name2label["unlabeled"].id)
    drawer = ImageDraw.Draw(canvas)
    counts: Dict[str, int] = {}
    drawn = []
    for obj in objects:
        label, is_group = _label_of(obj.label)
        if label.id < 0:
            continue
        value = label.id
        if label.hasInstances and not is_group:
            value = label.id * 1000 + counts.get(label.name, 0)
            counts[label.name] = counts.get(label.name, 0) + 1
        drawer.polygon(obj.polygon, fill=value)
        drawn.append((obj, value))
    return np.asarray(canvas, dtype=np.int32), drawn


def _photo(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisy RGB image where each pixel has its label's colour."""
    image = rng.integers(0, 40, size=(HEIGHT, WIDTH, 3)).astype(np.int32)
    label_ids = np.where(ids >= 1000, ids // 1000, ids)
    for label_id in np.unique(label_ids).tolist():
        image[label_ids == label_id] += np.asarray([label for label in name2label.values()
                                                   if label.id == label_id][0].color) // 2
    return np.clip(image, 0, 255).astype(np.uint8)


def make_cityscapes_split(root: Path, split: str = "val", seed: int = 0) -> List[FixtureImage]:
    """Writes the split under `root` (see the module docstring) and returns its images."""
    rng = np.random.default_rng(seed + 1)
    images = []
    for (city, seq, frame), objects in _scenes(seed).items():
        key = f"{city}_{seq}_{frame}"
        image_dir = root / "leftImg8bit" / split / city
        gt_dir = root / "gtFine" / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        item = FixtureImage(key, city, str(image_dir / f"{key}_leftImg8bit.png"),
                            str(gt_dir / f"{key}_gtFine_polygons.json"),
                            str(gt_dir / f"{key}_gtFine_instanceIds.png"), str(gt_dir / f"{key}_gtFine_labelIds.png"))

        ids, drawn = _draw(objects)
        for obj, value in drawn:
            label, is_group = _label_of(obj.label)
            if label.hasInstances and not label.ignoreInEval:
                visible = ids == value
                rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
                # the geometry and the drawing agree (a fixture self-check)
                assert obj.box == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1), (key, obj)
                item.expected.append(ExpectedInstance(label.name, int(is_group), obj.box))

        Image.fromarray(ids.astype(np.uint16)).save(item.instance_ids_file)
        label_ids = np.where(ids >= 1000, ids // 1000, ids).astype(np.uint8)
        Image.fromarray(label_ids).save(item.label_ids_file)
        Image.fromarray(_photo(ids, rng)).save(item.image_file)
        with open(item.json_file, "w", encoding="utf-8") as f:
            json.dump({"imgHeight": HEIGHT, "imgWidth": WIDTH,
                       "objects": [{"label": o.label, "polygon": [list(p) for p in o.polygon]}
                                   for o in objects]}, f)
        images.append(item)
    return images


# ---------------------------------------------------------------- ground truth as predictions


def ground_truth_predictions(item: FixtureImage, keep=None):
    """The evaluated instances of an image's instanceIds png as model output Instances.

    Masks are the pixels of each individual object (groups left out), classes the
    contiguous ids, scores 1.0, boxes the mask extents. keep(k) -> bool selects
    instances by their index in increasing instance id order (default: all).
    """
    import torch

    from mrcnn_plugin.data.datasets.cityscapes import CITYSCAPES_THING_LABEL_IDS
    from mrcnn_plugin.structures import Boxes, Instances

    ids = np.asarray(Image.open(item.instance_ids_file)).astype(np.int64)
    masks, classes = [], []
    for value in np.unique(ids).tolist():
        if value >= 1000 and value // 1000 in CITYSCAPES_THING_LABEL_IDS:
            masks.append(ids == value)
            classes.append(CITYSCAPES_THING_LABEL_IDS.index(value // 1000))
    chosen = [k for k in range(len(masks)) if keep is None or keep(k)]
    boxes = []
    for k in chosen:
        rows, cols = np.flatnonzero(masks[k].any(1)), np.flatnonzero(masks[k].any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    instances = Instances((HEIGHT, WIDTH))
    instances.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.scores = torch.ones(len(chosen))
    instances.pred_classes = torch.tensor([classes[k] for k in chosen], dtype=torch.int64)
    instances.pred_masks = (torch.from_numpy(np.stack([masks[k] for k in chosen])) if chosen
                            else torch.zeros((0, HEIGHT, WIDTH), dtype=torch.bool))
    return instances


def model_inputs(item: FixtureImage) -> dict:
    """What the evaluator reads from a model input: file name and original size."""
    return {"file_name": item.image_file, "image_id": Path(item.image_file).name,
            "height": HEIGHT, "width": WIDTH}


def distributed_evaluation_worker(gt_dir: str, images: List[FixtureImage], out_dir: str) -> None:
    """Run under torch.distributed: rank r processes images r, r + world, ... (rank 1 also
    processes image 0 again, as a padded sampler would); each rank writes its evaluate() result
    to {out_dir}/rank{r}.json."""
    import torch.distributed as dist

    from mrcnn_plugin.evaluation import CityscapesInstanceEvaluator

    rank, world = dist.get_rank(), dist.get_world_size()
    evaluator = CityscapesInstanceEvaluator(gt_dir=gt_dir)
    evaluator.reset()
    mine = [item for k, item in enumerate(images) if k % world == rank]
    if rank == 1:
        mine.append(images[0])
    for item in mine:
        evaluator.process([model_inputs(item)], [{"instances": ground_truth_predictions(item)}])
    result = evaluator.evaluate()
    with open(Path(out_dir) / f"rank{rank}.json", "w", encoding="utf-8") as f:
        json.dump({"result": result, "processed": len(mine)}, f)
