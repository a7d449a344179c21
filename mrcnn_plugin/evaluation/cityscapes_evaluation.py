"""Cityscapes instance-level evaluation with the official cityscapesscripts code.

Predictions are written in cityscapesscripts' instance format, one text file per
image, `{city}_{seq}_{frame}_pred.txt`, with one line per instance

    masks/{city}_{seq}_{frame}_{k}_{label_id}.png {label_id} {confidence}

(each mask a full-image 8-bit PNG, 255 inside, the label id cityscapes' regular
id, not the train id), and scored by
`cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling` against every
`*_gtFine_instanceIds.png` of the ground-truth folder: its `getPrediction` finds
each ground-truth image's text file, then the steps of its `evaluateImgLists`
run in order (setInstanceLabels, getGtInstances, matchGtWithPreds,
evaluateMatches, computeAverages). Results, in percent:

    {"segm": {"AP": mean AP over IoU 0.5:0.95 and the 8 classes, "AP50": AP at IoU 0.5}}

Compatibility with cityscapesscripts 2.3.0 (its latest release) under numpy >= 2:
evaluateImgLists itself is not called because it dumps its matches to
"matches.json" in the current directory, a debug file that fails to serialise
numpy 2's integer counts; its steps are called instead, which is the same
computation without the dump. assignGt2Preds calls np.in1d, removed in numpy
2.4, which is provided (as np.isin, flattened) only while the script runs.

The script keeps its settings in a module-level `args` object; this evaluator
works on a copy of it (the module's own is left untouched), keeps the
ground-truth cache (gtInstances.json) in a temporary folder, and turns the
script's print-and-exit errors into exceptions.
"""
import contextlib
import copy
import glob
import io
import logging
import os
import shutil
import tempfile
import warnings
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from .evaluator import DatasetEvaluator, Results, gather_to_main_process, is_main_process

__all__ = ["CityscapesInstanceEvaluator"]

logger = logging.getLogger(__name__)

RESULTS_DIR_NAME = "cityscapes_instances"  # under output_dir: the prediction files, kept after evaluation
_GT_PATTERN = "*_gtFine_instanceIds.png"
_IMAGE_SUFFIX = "_leftImg8bit.png"

# One image's predictions: (image key "{city}_{seq}_{frame}", height, width,
# [(cityscapes label id, score, RLE mask)]).
_ImagePredictions = Tuple[str, int, int, List[Tuple[int, float, Dict[str, Any]]]]


def _image_key(file_name: str) -> str:
    """The "{city}_{seq}_{frame}" part of a Cityscapes file name (leftImg8bit or gtFine)."""
    parts = os.path.basename(file_name).split("_")
    if len(parts) < 4:
        raise ValueError(f"{file_name!r} is not a Cityscapes file name ({{city}}_{{seq}}_{{frame}}_...)")
    return "_".join(parts[:3])


def _evaluated_labels() -> Dict[int, str]:
    """Label id -> name of the classes cityscapesscripts evaluates (instances, not ignored)."""
    from cityscapesscripts.helpers.labels import labels

    return {label.id: label.name for label in labels if label.hasInstances and not label.ignoreInEval}


@contextlib.contextmanager
def _numpy_in1d_for_cityscapesscripts() -> Iterator[None]:
    """Provides `numpy.in1d` for the duration of the block when numpy lacks it.

    cityscapesscripts 2.3.0 (its latest release) calls np.in1d in assignGt2Preds;
    numpy 2.4 removed it in favour of np.isin, whose flattened result is what
    in1d returned. Nothing is changed when numpy still has in1d.
    """
    if hasattr(np, "in1d"):
        yield
        return

    def in1d(ar1: Any, ar2: Any, assume_unique: bool = False, invert: bool = False) -> np.ndarray:
        return np.isin(np.asarray(ar1).ravel(), ar2, assume_unique=assume_unique, invert=invert)

    np.in1d = in1d  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del np.in1d  # type: ignore[attr-defined]


class CityscapesInstanceEvaluator(DatasetEvaluator):
    """Scores instance masks against a Cityscapes gtFine split with the official script.

    dataset_name: a registered dataset whose metadata gives gt_dir and the class
        map (thing_contiguous_id_to_label_id, else thing_dataset_id_to_contiguous_id
        inverted, else thing_classes looked up by name in cityscapesscripts' labels).
    gt_dir: the gtFine split folder ({gt_dir}/{city}/*_gtFine_instanceIds.png);
        overrides the metadata's.
    thing_label_ids: cityscapes label id of each contiguous class id (index =
        contiguous id); overrides the metadata's. Default without a dataset: the
        8 evaluated classes in cityscapesscripts' order (24, 25, 26, 27, 28, 31, 32, 33).
    output_dir: when given, the prediction files are kept in
        {output_dir}/cityscapes_instances (replaced at each evaluation);
        otherwise they live in a temporary folder.

    Every image of gt_dir must have been processed: the official metric is over
    the whole split. Model outputs need "instances" with pred_masks (full-image,
    at the input's height x width), scores and pred_classes. In a distributed
    run, evaluate() gathers the predictions (masks as RLE) to rank 0, which
    writes and scores them; every rank must call it and the others get {}.
    """

    def __init__(self, dataset_name: Optional[str] = None, *, gt_dir: Optional[str] = None,
                 thing_label_ids: Optional[Sequence[int]] = None, output_dir: Optional[str] = None):
        metadata = None
        if dataset_name is not None:
            from mrcnn_plugin.data import MetadataCatalog  # lazy: evaluation must not require the data package

            metadata = MetadataCatalog.get(dataset_name)
        if gt_dir is None:
            gt_dir = metadata.get("gt_dir") if metadata is not None else None
        if not gt_dir:
            raise ValueError("CityscapesInstanceEvaluator needs gt_dir, given directly or as the 'gt_dir' "
                             f"metadata of the dataset ({dataset_name!r} has none)")
        self._gt_dir = str(gt_dir)
        self._label_ids = self._resolve_label_ids(thing_label_ids, metadata, dataset_name)
        self._output_dir = output_dir
        self._predictions: List[_ImagePredictions] = []

    @classmethod
    def from_dataset(cls, dataset_name: str, cfg: Any = None, output_dir: Optional[str] = None
                     ) -> "CityscapesInstanceEvaluator":
        """An evaluator for a registered dataset (cfg is accepted for symmetry with COCOEvaluator)."""
        del cfg
        return cls(dataset_name, output_dir=output_dir)

    @staticmethod
    def _resolve_label_ids(thing_label_ids: Optional[Sequence[int]], metadata: Any,
                           dataset_name: Optional[str]) -> List[int]:
        """Cityscapes label id of each contiguous class id, checked against the evaluated classes."""
        evaluated = _evaluated_labels()
        if thing_label_ids is not None:
            ids = [int(i) for i in thing_label_ids]
        elif metadata is None:
            ids = list(evaluated)
        elif metadata.get("thing_contiguous_id_to_label_id") is not None:
            mapping = metadata.get("thing_contiguous_id_to_label_id")
            ids = [int(mapping[k]) for k in sorted(mapping)]
        elif metadata.get("thing_dataset_id_to_contiguous_id") is not None:
            inverse = {c: d for d, c in metadata.get("thing_dataset_id_to_contiguous_id").items()}
            ids = [int(inverse[k]) for k in sorted(inverse)]
        elif metadata.get("thing_classes") is not None:
            by_name = {name: label_id for label_id, name in evaluated.items()}
            unknown = [n for n in metadata.get("thing_classes") if n not in by_name]
            if unknown:
                raise ValueError(f"thing_classes {unknown} of dataset {dataset_name!r} are not Cityscapes "
                                 f"evaluated classes {list(by_name)}")
            ids = [by_name[n] for n in metadata.get("thing_classes")]
        else:
            raise ValueError(f"Dataset {dataset_name!r} has no class map; give thing_label_ids")
        not_evaluated = sorted(set(ids) - set(evaluated))
        if not_evaluated:
            raise ValueError(f"Label ids {not_evaluated} are not classes the Cityscapes instance evaluation "
                             f"scores; expected some of {sorted(evaluated)}")
        return ids

    # ------------------------------------------------------------ DatasetEvaluator

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Keeps each image's masks as RLE with their label ids and scores."""
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                continue
            instances = out["instances"]
            file_name = inp["file_name"]
            if len(instances) and not instances.has("pred_masks"):
                raise ValueError(f"CityscapesInstanceEvaluator needs pred_masks (MODEL.MASK_ON); the "
                                 f"predictions for {file_name!r} have only {list(instances.get_fields())}")
            height, width = (int(inp["height"]), int(inp["width"])) if "height" in inp else \
                tuple(int(s) for s in instances.image_size)
            self._predictions.append((_image_key(file_name), height, width,
                                      self._encode(instances, file_name, height, width)))

    def _encode(self, instances: Any, file_name: str, height: int, width: int
                ) -> List[Tuple[int, float, Dict[str, Any]]]:
        if len(instances) == 0:
            return []
        masks = instances.pred_masks
        masks = (masks.tensor if hasattr(masks, "tensor") else masks).detach().cpu().numpy()
        if masks.shape[1:] != (height, width):
            raise ValueError(f"pred_masks of {file_name!r} are {masks.shape[1]} x {masks.shape[2]}, the image is "
                             f"{height} x {width}: Cityscapes masks must be at the original image size")
        rles = mask_util.encode(np.asfortranarray(masks.astype(np.uint8).transpose(1, 2, 0)))
        classes = instances.pred_classes.detach().cpu().tolist()
        scores = instances.scores.detach().cpu().tolist()
        encoded = []
        for cls, score, rle in zip(classes, scores, rles):
            if not 0 <= cls < len(self._label_ids):
                raise ValueError(f"Predicted class {cls} for {file_name!r} has no Cityscapes label id "
                                 f"(the evaluator knows {len(self._label_ids)} classes)")
            encoded.append((self._label_ids[cls], float(score), rle))
        return encoded

    def evaluate(self) -> Results:
        predictions = gather_to_main_process(self._predictions)
        if not is_main_process():
            return {}
        by_image = self._unique_images(predictions)
        gt_files = self._ground_truth_files(by_image)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".cityscapes_instances_", dir=self._output_dir or None)
        try:
            self._write_predictions(by_image, staging)
            averages = self._run_official_evaluation(staging, gt_files)
            if self._output_dir:
                final = os.path.join(self._output_dir, RESULTS_DIR_NAME)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(staging, final)
                logger.info("Cityscapes predictions kept in %s", final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._log_table(averages)
        return {"segm": {"AP": 100.0 * float(averages["allAp"]), "AP50": 100.0 * float(averages["allAp50%"])}}

    # ------------------------------------------------------------ helpers of evaluate()

    @staticmethod
    def _unique_images(predictions: List[_ImagePredictions]) -> Dict[str, _ImagePredictions]:
        """Predictions by image key, the first copy of an image seen twice (distributed padding) kept."""
        by_image: Dict[str, _ImagePredictions] = {}
        for item in predictions:
            by_image.setdefault(item[0], item)
        if len(by_image) < len(predictions):
            logger.warning("CityscapesInstanceEvaluator: %d repeated images ignored",
                           len(predictions) - len(by_image))
        return by_image

    def _ground_truth_files(self, by_image: Mapping[str, _ImagePredictions]) -> List[str]:
        """Every instanceIds png of gt_dir (absolute), checked against the processed images."""
        pattern = os.path.join(os.path.abspath(self._gt_dir), "*", _GT_PATTERN)
        gt_files = sorted(glob.glob(pattern))
        if not gt_files:
            raise FileNotFoundError(f"No Cityscapes ground truth found: nothing matches {pattern!r}")
        gt_keys = {_image_key(f): f for f in gt_files}
        missing = [k for k in gt_keys if k not in by_image]
        if missing:
            raise ValueError(f"{len(missing)} of {len(gt_files)} ground-truth images of {self._gt_dir!r} have no "
                             f"predictions (e.g. {gt_keys[missing[0]]!r}); the Cityscapes metric is over the "
                             "whole split, so every image must be processed")
        extra = [k for k in by_image if k not in gt_keys]
        if extra:
            logger.warning("CityscapesInstanceEvaluator: %d processed images have no ground truth in %s "
                           "(e.g. %s); they are not scored", len(extra), self._gt_dir, extra[0])
        for key, gt_file in gt_keys.items():
            with Image.open(gt_file) as gt_image:
                gt_width, gt_height = gt_image.size
            _, height, width, _ = by_image[key]
            if (height, width) != (gt_height, gt_width):
                raise ValueError(f"Predictions for {key} are {height} x {width}, its ground truth {gt_file!r} "
                                 f"is {gt_height} x {gt_width}")
        return gt_files

    @staticmethod
    def _write_predictions(by_image: Mapping[str, _ImagePredictions], folder: str) -> None:
        """One text file per image and one mask PNG per instance, in cityscapesscripts' format."""
        mask_dir = os.path.join(folder, "masks")
        os.makedirs(mask_dir, exist_ok=True)
        for key, (_, _, _, instances) in by_image.items():
            lines = []
            for k, (label_id, score, rle) in enumerate(instances):
                mask_name = f"{key}_{k}_{label_id}.png"
                Image.fromarray(mask_util.decode(rle) * np.uint8(255), mode="L").save(
                    os.path.join(mask_dir, mask_name))
                # repr keeps every digit of the score: rounding could reorder detections.
                lines.append(f"masks/{mask_name} {label_id} {score!r}\n")
            with open(os.path.join(folder, f"{key}_pred.txt"), "w", encoding="ascii") as f:
                f.writelines(lines)

    def _run_official_evaluation(self, prediction_dir: str, gt_files: List[str]) -> Dict[str, Any]:
        """cityscapesscripts' getPrediction, then evaluateImgLists' steps; returns the "averages" dict."""
        import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cs_eval

        with tempfile.TemporaryDirectory(prefix="cityscapes_eval_") as work:
            args = copy.copy(cs_eval.args)  # the module's global settings object stays as it was
            args.predictionPath = os.path.abspath(prediction_dir)
            args.predictionWalk = None
            args.groundTruthSearch = os.path.join(os.path.abspath(self._gt_dir), "*", _GT_PATTERN)
            args.gtInstancesFile = os.path.join(work, "gtInstances.json")
            args.exportFile = os.path.join(work, "resultInstanceLevelSemanticLabeling.json")
            args.JSONOutput = False
            args.colorized = False
            args.csv = False
            args.quiet = True
            output = io.StringIO()
            try:
                with _numpy_in1d_for_cityscapesscripts(), contextlib.redirect_stdout(output), \
                        warnings.catch_warnings():
                    # nanmean of a class without ground truth or predictions warns; NaN is the answer.
                    warnings.simplefilter("ignore", RuntimeWarning)
                    prediction_files = [cs_eval.getPrediction(gt, args) for gt in gt_files]
                    # evaluateImgLists without its matches.json dump (see the module docstring)
                    cs_eval.setInstanceLabels(args)
                    gt_instances = cs_eval.getGtInstances(gt_files, args)
                    matches = cs_eval.matchGtWithPreds(prediction_files, gt_files, gt_instances, args)
                    ap_scores = cs_eval.evaluateMatches(matches, args)
                    averages = cs_eval.computeAverages(ap_scores, args)
            except SystemExit:  # cityscapesscripts' printError prints and exits
                message = output.getvalue().strip() or "cityscapesscripts exited"
                raise RuntimeError(f"Cityscapes evaluation failed: {message.splitlines()[-1]}") from None
        return averages

    @staticmethod
    def _log_table(averages: Mapping[str, Any]) -> None:
        rows = [f"{'class':<12} {'AP':>8} {'AP50':>8}"]
        for name, values in averages["classes"].items():
            rows.append(f"{name:<12} {100 * values['ap']:8.3f} {100 * values['ap50%']:8.3f}")
        rows.append(f"{'average':<12} {100 * averages['allAp']:8.3f} {100 * averages['allAp50%']:8.3f}")
        logger.info("Cityscapes instance segmentation:\n%s", "\n".join(rows))
