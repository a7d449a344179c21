"""Evaluation: the evaluator interface, the inference loop, and COCO metrics (pycocotools).

    from mrcnn_plugin.evaluation import COCOEvaluator, inference_on_dataset, format_ap_table
    evaluator = COCOEvaluator.from_dataset("coco_2017_val", cfg, output_dir="output/eval")
    results = inference_on_dataset(model, data_loader, evaluator)
    logger.info("\n" + format_ap_table(results))
"""
from .cityscapes_evaluation import CityscapesInstanceEvaluator
from .coco_evaluation import (
    COCO_PERSON_KEYPOINT_OKS_SIGMAS,
    COCOEvaluator,
    evaluate_coco_results,
    format_ap_table,
    instances_to_coco_json,
    summarize_coco_eval,
)
from .evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    gather_to_main_process,
    get_world_size,
    inference_on_dataset,
    is_main_process,
)

__all__ = [
    "CityscapesInstanceEvaluator",
    "COCO_PERSON_KEYPOINT_OKS_SIGMAS",
    "COCOEvaluator",
    "evaluate_coco_results",
    "format_ap_table",
    "instances_to_coco_json",
    "summarize_coco_eval",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "gather_to_main_process",
    "get_world_size",
    "inference_on_dataset",
    "is_main_process",
]
