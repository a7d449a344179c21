"""COCO evaluation (boxes, masks, keypoints) with the official pycocotools COCOeval.

Model outputs follow detectron2: `outputs[i]["instances"]` holds

    pred_boxes      Boxes (or Tensor) [N, 4], XYXY absolute pixels at the original image size
    scores          Tensor[N]
    pred_classes    Tensor[N] int64, contiguous ids 0..K-1
    pred_masks      Tensor[N, H, W] bool (optional), full-image masks
    pred_keypoints  Tensor[N, K, 3] (optional), (x, y, score) in continuous coordinates

and `inputs[i]["image_id"]` is the COCO image id. They become COCO result dicts
(`{"image_id", "category_id", "bbox": XYWH, "score", "segmentation": RLE,
"keypoints": [x, y, v] * K}`), are written to `coco_instances_results.json`, and
each task is scored by COCOeval into percentages:

    {"bbox": {"AP": .., "AP50": .., "AP75": .., "APs": .., "APm": .., "APl": .., "AP-person": ..},
     "segm": {...}, "keypoints": {"AP", "AP50", "AP75", "APm", "APl"}}

Keypoint convention: COCO annotations give keypoints as integer pixel indices,
which the data loader turns into continuous coordinates by adding 0.5 (as
detectron2 does); the model predicts continuous coordinates, so 0.5 is subtracted
here before writing results. Ground truth fed back through loader and evaluator
is therefore unchanged.
"""
import contextlib
import io
import json
import logging
import math
import os
import tempfile
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .evaluator import DatasetEvaluator, Results, gather_to_main_process, is_main_process

__all__ = [
    "COCOEvaluator",
    "COCO_PERSON_KEYPOINT_OKS_SIGMAS",
    "instances_to_coco_json",
    "evaluate_coco_results",
    "summarize_coco_eval",
    "format_ap_table",
]

logger = logging.getLogger(__name__)

# Per-keypoint OKS standard deviations of the 17 COCO person keypoints (nose, eyes,
# ears, shoulders, elbows, wrists, hips, knees, ankles), from the COCO keypoint
# evaluation definition (cocodataset.org/#keypoints-eval).
COCO_PERSON_KEYPOINT_OKS_SIGMAS: Tuple[float, ...] = (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
    1.07, 1.07, 0.87, 0.87, 0.89, 0.89)
_OKS_SIGMA_SCALE = 10.0  # the values above are sigmas x 10

# COCOeval.stats index of each reported metric, per task (summarize() orders them so).
_TASK_METRICS: Dict[str, Tuple[str, ...]] = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl"),  # COCO has no small-person keypoint AP
}

RESULTS_FILE_NAME = "coco_instances_results.json"


# ---------------------------------------------------------------- model outputs -> COCO results


def _as_tensor(field: Any) -> torch.Tensor:
    """A structure's underlying tensor (Boxes.tensor, BitMasks.tensor) or the tensor itself."""
    return field.tensor if hasattr(field, "tensor") else field


def _boxes_xywh(pred_boxes: Any) -> List[List[float]]:
    """pred_boxes: Boxes or Tensor[N, 4] XYXY -> N lists [x, y, w, h] (float64 arithmetic)."""
    # float64 so that width = x1 - x0 is not rounded a second time in float32.
    boxes = _as_tensor(pred_boxes).detach().cpu().to(torch.float64)
    boxes[:, 2:] -= boxes[:, :2]
    return boxes.tolist()


def _encode_masks(pred_masks: Any) -> List[Dict[str, Any]]:
    """pred_masks: Tensor[N, H, W] (bool or 0/1) -> N COCO RLE dicts {"size": [H, W], "counts": str}."""
    masks = _as_tensor(pred_masks).detach().cpu().numpy().astype(np.uint8)
    # pycocotools wants [H, W, N] in Fortran order.
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
    for rle in rles:
        # counts come back as bytes; JSON needs str (ASCII, so decoding is lossless).
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _keypoints_coco(pred_keypoints: torch.Tensor) -> List[List[float]]:
    """pred_keypoints: Tensor[N, K, 3] (x, y, score) continuous -> N flat lists [x, y, score] * K
    in COCO's pixel-index convention (x and y minus 0.5, the inverse of the loader's +0.5)."""
    keypoints = pred_keypoints.detach().cpu().to(torch.float64).clone()  # never edit the caller's tensor
    keypoints[:, :, :2] -= 0.5
    return keypoints.flatten(1).tolist()


def instances_to_coco_json(instances: Any, image_id: int,
                           contiguous_id_to_dataset_id: Optional[Mapping[int, int]] = None
                           ) -> List[Dict[str, Any]]:
    """One image's predicted Instances -> COCO result dicts, one per instance.

    instances: Instances with the fields described in the module docstring; masks
        and keypoints are included when present.
    contiguous_id_to_dataset_id: maps pred_classes to COCO category ids; None keeps them.
    """
    num = len(instances)
    if num == 0:
        return []
    boxes = _boxes_xywh(instances.pred_boxes)
    scores = instances.scores.detach().cpu().tolist()
    classes = instances.pred_classes.detach().cpu().tolist()
    rles = _encode_masks(instances.pred_masks) if instances.has("pred_masks") else None
    keypoints = (_keypoints_coco(_as_tensor(instances.pred_keypoints)) if instances.has("pred_keypoints")
                 else None)

    results = []
    for k in range(num):
        category_id = _dataset_id(classes[k], contiguous_id_to_dataset_id)
        result = {"image_id": int(image_id), "category_id": category_id, "bbox": boxes[k],
                  "score": float(scores[k])}
        if rles is not None:
            result["segmentation"] = rles[k]
        if keypoints is not None:
            result["keypoints"] = keypoints[k]
        results.append(result)
    return results


def _dataset_id(contiguous_id: int, mapping: Optional[Mapping[int, int]]) -> int:
    """COCO category id of a predicted class; a clear error for a class outside the mapping."""
    if mapping is None:
        return int(contiguous_id)
    try:
        return int(mapping[int(contiguous_id)])
    except KeyError:
        raise KeyError(f"Predicted class {contiguous_id} has no COCO category id; the evaluator maps "
                       f"contiguous ids {sorted(mapping)}") from None


# ---------------------------------------------------------------- COCOeval


def _quiet_coco(json_file: str) -> COCO:
    """Loads a COCO annotation file without pycocotools' stdout chatter."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


def _results_for_task(results: Sequence[Dict[str, Any]], task: str) -> List[Dict[str, Any]]:
    """Shallow copies of `results` prepared for one COCOeval task.

    Copies because COCO.loadRes writes "area", "id" (and a box polygon as
    "segmentation") into the dicts it gets, which would leak into the next task.
    For segm the box is dropped so that loadRes takes the area from the mask,
    giving COCO's mask-area definition of small / medium / large.
    """
    prepared = [dict(r) for r in results]
    if task == "segm":
        for r in prepared:
            r.pop("bbox", None)
    return prepared


def _check_keypoint_counts(coco_gt: COCO, results: Sequence[Dict[str, Any]], sigmas: np.ndarray) -> None:
    """Raises ValueError unless predictions, ground truth and OKS sigmas have the same keypoint count."""
    num_dt = len(results[0]["keypoints"]) // 3
    gt_with_kpts = (a for a in coco_gt.anns.values() if "keypoints" in a)
    num_gt = len(next(gt_with_kpts)["keypoints"]) // 3
    if not num_dt == num_gt == len(sigmas):
        raise ValueError(
            f"Keypoint counts disagree: predictions have {num_dt}, ground truth {num_gt}, OKS sigmas "
            f"{len(sigmas)} (cfg.TEST.KEYPOINT_OKS_SIGMAS / kpt_oks_sigmas); they must be equal")


def evaluate_coco_results(coco_gt: COCO, results: Sequence[Dict[str, Any]], task: str,
                          kpt_oks_sigmas: Optional[Sequence[float]] = None) -> COCOeval:
    """Runs COCOeval (evaluate, accumulate, summarize) of non-empty `results` for one task.

    task: "bbox", "segm" or "keypoints". kpt_oks_sigmas: per-keypoint OKS sigmas
    (keypoints only), defaulting to COCO_PERSON_KEYPOINT_OKS_SIGMAS / 10.
    COCOeval's printed summary is logged at INFO level instead of printed.
    """
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        coco_dt = coco_gt.loadRes(_results_for_task(results, task))
        coco_eval = COCOeval(coco_gt, coco_dt, task)
        if task == "keypoints":
            sigmas = (np.asarray(kpt_oks_sigmas, dtype=np.float64) if kpt_oks_sigmas
                      else np.asarray(COCO_PERSON_KEYPOINT_OKS_SIGMAS) / _OKS_SIGMA_SCALE)
            _check_keypoint_counts(coco_gt, results, sigmas)
            coco_eval.params.kpt_oks_sigmas = sigmas
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info("COCOeval %s:\n%s", task, stdout.getvalue())
    return coco_eval


def _percent(value: float) -> float:
    """A COCOeval value (fraction, or -1 for 'no ground truth') as a percentage or NaN."""
    return float(value) * 100.0 if value >= 0 else float("nan")


def _per_class_ap(coco_eval: COCOeval, class_names: Sequence[str]) -> Dict[str, float]:
    """{"AP-<name>": percent} from eval["precision"], one per category of params.catIds.

    precision has shape [IoU thresholds, recall points, categories, area ranges,
    max detections]; a class's AP is the mean over IoU thresholds and recall
    points at area "all" (index 0) and the largest max-detections setting
    (100 for boxes and masks), skipping -1 entries (no ground truth).
    """
    precision = coco_eval.eval["precision"]
    per_class = {}
    for k, name in enumerate(class_names):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[f"AP-{name}"] = float(np.mean(values)) * 100.0 if values.size else float("nan")
    return per_class


def summarize_coco_eval(coco_eval: Optional[COCOeval], task: str,
                        class_names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """The metric dict of one task, in percent; all NaN when `coco_eval` is None (no predictions).

    class_names: names of COCOeval's categories in params.catIds order; per-class
    APs are added when there is more than one class (with one, it equals "AP").
    """
    metrics = _TASK_METRICS[task]
    if coco_eval is None:
        result = {m: float("nan") for m in metrics}
        if class_names is not None and len(class_names) > 1:
            result.update({f"AP-{name}": float("nan") for name in class_names})
        return result
    result = {m: _percent(coco_eval.stats[i]) for i, m in enumerate(metrics)}
    if class_names is not None and len(class_names) > 1:
        result.update(_per_class_ap(coco_eval, class_names))
    return result


# ---------------------------------------------------------------- the evaluator


class COCOEvaluator(DatasetEvaluator):
    """Scores instance predictions against a COCO-format annotation file with COCOeval.

    json_file: COCO annotations (instances_*.json or person_keypoints_*.json).
    tasks: subset of ("bbox", "segm", "keypoints"); a task is skipped (with a log
        line) when the predictions lack its field or, for keypoints, when the
        annotations have no keypoints.
    output_dir: where `coco_instances_results.json` is written (None: not written).
    contiguous_id_to_dataset_id: {contiguous class id: COCO category id}. Default:
        the file's category ids in increasing order get 0..K-1, the convention of
        the COCO loader (detectron2's thing_dataset_id_to_contiguous_id).
    kpt_oks_sigmas: per-keypoint OKS sigmas; default the 17 COCO person sigmas.
    thing_classes: class names by contiguous id, for the per-class "AP-<name>"
        keys; default the category names of the file.

    In a distributed run, evaluate() gathers all ranks' predictions to rank 0
    (every rank must call it) and returns {} on the other ranks.
    """

    def __init__(self, json_file: str, tasks: Iterable[str] = ("bbox", "segm", "keypoints"),
                 output_dir: Optional[str] = None,
                 contiguous_id_to_dataset_id: Optional[Mapping[int, int]] = None,
                 kpt_oks_sigmas: Optional[Sequence[float]] = None,
                 thing_classes: Optional[Sequence[str]] = None):
        self._tasks = tuple(tasks)
        unknown = [t for t in self._tasks if t not in _TASK_METRICS]
        if unknown:
            raise ValueError(f"Unknown COCO task(s) {unknown}; expected some of {list(_TASK_METRICS)}")
        self._json_file = str(json_file)
        self._output_dir = output_dir
        self._coco_gt = _quiet_coco(self._json_file)
        cat_ids = sorted(self._coco_gt.getCatIds())
        self._contiguous_to_dataset = (dict(contiguous_id_to_dataset_id) if contiguous_id_to_dataset_id
                                       is not None else dict(enumerate(cat_ids)))
        self._kpt_oks_sigmas = list(kpt_oks_sigmas) if kpt_oks_sigmas else None
        self._thing_classes = list(thing_classes) if thing_classes is not None else None
        self._predictions: List[Tuple[int, List[Dict[str, Any]]]] = []

    @classmethod
    def from_dataset(cls, dataset_name: str, cfg: Any = None, output_dir: Optional[str] = None
                     ) -> "COCOEvaluator":
        """An evaluator for a registered dataset, configured like the model.

        Reads MetadataCatalog.get(dataset_name).json_file, thing_dataset_id_to_contiguous_id
        and thing_classes; from cfg, tasks (bbox, + segm if MODEL.MASK_ON, + keypoints if
        MODEL.KEYPOINT_ON) and TEST.KEYPOINT_OKS_SIGMAS when non-empty. Without cfg, all tasks.
        """
        from mrcnn_plugin.data import MetadataCatalog  # lazy: evaluation must not require the data package

        metadata = MetadataCatalog.get(dataset_name)
        json_file = getattr(metadata, "json_file", None)
        if not json_file:
            raise ValueError(f"Dataset '{dataset_name}' has no 'json_file' in MetadataCatalog; "
                             "COCOEvaluator needs COCO-format annotations")
        id_map = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
        return cls(json_file, tasks=_tasks_from_cfg(cfg), output_dir=output_dir,
                   contiguous_id_to_dataset_id={v: k for k, v in id_map.items()} if id_map else None,
                   kpt_oks_sigmas=list(cfg.TEST.KEYPOINT_OKS_SIGMAS) if cfg is not None else None,
                   thing_classes=getattr(metadata, "thing_classes", None))

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Converts each image's "instances" to COCO results right away (RLE masks are small)."""
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                continue
            image_id = int(inp["image_id"])
            self._predictions.append(
                (image_id, instances_to_coco_json(out["instances"], image_id, self._contiguous_to_dataset)))

    def evaluate(self) -> Results:
        predictions = gather_to_main_process(self._predictions)
        if not is_main_process():
            return {}
        results = _flatten_unique(predictions)
        if self._output_dir:
            _write_json_atomically(results, os.path.join(self._output_dir, RESULTS_FILE_NAME))
        if not self._coco_gt.getAnnIds():
            logger.info("%s has no annotations (a test split?): results written, nothing evaluated",
                        self._json_file)
            return {}
        _check_image_ids(results, self._coco_gt, self._json_file)
        return {task: self._evaluate_task(results, task) for task in self._tasks_to_run(results)}

    def _tasks_to_run(self, results: List[Dict[str, Any]]) -> List[str]:
        """The requested tasks that these results and the annotations make possible."""
        tasks = []
        gt_has_keypoints = any("keypoints" in a for a in self._coco_gt.anns.values())
        for task in self._tasks:
            field = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[task]
            if task == "keypoints" and not gt_has_keypoints:
                logger.info("Skipping keypoints: %s has no keypoint annotations", self._json_file)
            elif results and field not in results[0]:
                logger.info("Skipping %s: the predictions have no %s", task, field)
            else:
                tasks.append(task)
        return tasks

    def _evaluate_task(self, results: List[Dict[str, Any]], task: str) -> Dict[str, float]:
        """Metric dict of one task; NaN with a warning when there is nothing to score."""
        coco_eval = None
        if results:
            coco_eval = evaluate_coco_results(self._coco_gt, results, task, self._kpt_oks_sigmas)
        else:
            # COCOeval cannot handle an empty result list (loadRes fails on it).
            logger.warning("COCOEvaluator: no predictions for %s, reporting NaN", task)
        metrics = summarize_coco_eval(coco_eval, task, self._class_names())
        logger.info("Evaluation results for %s:\n%s", task, format_ap_table({task: metrics}))
        return metrics

    def _class_names(self) -> List[str]:
        """Names of the annotation file's categories, in COCOeval's (sorted id) order."""
        cat_ids = sorted(self._coco_gt.getCatIds())
        if self._thing_classes is None:
            return [self._coco_gt.cats[c]["name"] for c in cat_ids]
        dataset_to_contiguous = {d: c for c, d in self._contiguous_to_dataset.items()}
        return [self._thing_classes[dataset_to_contiguous[c]] if c in dataset_to_contiguous
                else self._coco_gt.cats[c]["name"] for c in cat_ids]


def _tasks_from_cfg(cfg: Any) -> Tuple[str, ...]:
    """("bbox",) plus "segm" if cfg.MODEL.MASK_ON plus "keypoints" if cfg.MODEL.KEYPOINT_ON."""
    if cfg is None:
        return tuple(_TASK_METRICS)
    tasks = ("bbox",)
    if cfg.MODEL.MASK_ON:
        tasks += ("segm",)
    if cfg.MODEL.KEYPOINT_ON:
        tasks += ("keypoints",)
    return tasks


def _flatten_unique(predictions: List[Tuple[int, List[Dict[str, Any]]]]) -> List[Dict[str, Any]]:
    """All images' result dicts, keeping only the first copy of an image seen more than once.

    A distributed sampler may pad ranks with repeated images; counting their
    detections twice would add false positives.
    """
    seen = set()
    results: List[Dict[str, Any]] = []
    for image_id, image_results in predictions:
        if image_id in seen:
            continue
        seen.add(image_id)
        results.extend(image_results)
    if len(seen) < len(predictions):
        logger.warning("COCOEvaluator: %d repeated images ignored", len(predictions) - len(seen))
    return results


def _check_image_ids(results: Sequence[Dict[str, Any]], coco_gt: COCO, json_file: str) -> None:
    """ValueError naming the image ids of `results` that the annotation file does not have."""
    unknown = {r["image_id"] for r in results} - set(coco_gt.getImgIds())
    if unknown:
        raise ValueError(f"Predictions for image ids not in {json_file}: {sorted(unknown)[:10]}")


def _write_json_atomically(obj: Any, path: str) -> None:
    """Writes `obj` as JSON to `path` through a temporary file, so a crash never leaves half a file."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    logger.info("Wrote %d COCO results to %s", len(obj), path)


# ---------------------------------------------------------------- reporting


def _format_value(value: Optional[float]) -> str:
    """A metric cell: 3 decimals, 'nan', or empty when the task has no such metric."""
    if value is None:
        return ""
    return "nan" if math.isnan(value) else f"{value:.3f}"


def format_ap_table(results: Mapping[str, Mapping[str, float]], per_class: bool = False) -> str:
    """A Markdown table of {task: {metric: value}}: one row per task, AP..APl columns.

    per_class: also one "| task | category | AP |" table of the AP-<class> entries.
    Returns the text (nothing is printed).
    """
    columns = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    lines = ["| task | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 1)]
    for task, metrics in results.items():
        cells = [_format_value(metrics.get(c)) for c in columns]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    if per_class:
        lines += ["", "| task | category | AP |", "|---|---|---|"]
        for task, metrics in results.items():
            for key, value in metrics.items():
                if key.startswith("AP-"):
                    lines.append(f"| {task} | {key[3:]} | {_format_value(value)} |")
    return "\n".join(lines)
