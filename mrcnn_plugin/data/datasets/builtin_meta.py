"""Facts about the COCO label sets: category ids and names, person keypoints.

The built-in datasets set this metadata when registered, so it is readable
before any json is loaded (a keypoint mapper needs the flip map when it is
built). `load_coco_json` derives the same values from a json's "categories".
"""
from typing import Dict, List, Sequence, Tuple

__all__ = ["COCO_CATEGORIES", "COCO_PERSON_KEYPOINT_NAMES", "COCO_PERSON_SKELETON",
           "keypoint_flip_map_from_names", "connection_rules_from_skeleton", "coco_instances_metadata",
           "coco_person_keypoints_metadata"]

# (COCO category id, name) of the 80 "thing" classes of COCO 2017; ids have gaps.
COCO_CATEGORIES: Tuple[Tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"),
    (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"),
    (24, "zebra"), (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"),
    (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"),
    (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"),
    (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"),
    (52, "banana"), (53, "apple"), (54, "sandwich"), (55, "orange"), (56, "broccoli"),
    (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"),
    (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"),
    (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"),
    (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)

# The 17 COCO person keypoints in annotation order.
COCO_PERSON_KEYPOINT_NAMES: Tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)

# COCO's "skeleton": pairs of 1-based keypoint indices joined by a limb.
COCO_PERSON_SKELETON: Tuple[Tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)


def keypoint_flip_map_from_names(names: Sequence[str]) -> Tuple[Tuple[str, str], ...]:
    """Pairs ("left_x", "right_x") of keypoints that swap under a horizontal flip.

    Pairs are found by name: every "left_*" with a matching "right_*" (COCO's
    convention); keypoints without a partner (the nose) map to themselves.
    """
    name_set = set(names)
    pairs = []
    for n in names:
        if n.startswith("left_") and "right_" + n[len("left_"):] in name_set:
            pairs.append((n, "right_" + n[len("left_"):]))
    return tuple(pairs)


def connection_rules_from_skeleton(names: Sequence[str],
                                   skeleton: Sequence[Sequence[int]]) -> Tuple[Tuple[str, str], ...]:
    """COCO skeleton (1-based index pairs) -> pairs of keypoint names."""
    return tuple((names[a - 1], names[b - 1]) for a, b in skeleton)


def coco_instances_metadata() -> Dict[str, object]:
    """thing_classes and the COCO id -> contiguous id map of the 80-class instance sets."""
    ids = [i for i, _ in COCO_CATEGORIES]
    return {"thing_classes": [n for _, n in COCO_CATEGORIES],
            "thing_dataset_id_to_contiguous_id": {cid: i for i, cid in enumerate(ids)}}


def coco_person_keypoints_metadata() -> Dict[str, object]:
    """Metadata of the person keypoint sets: one class, 17 keypoints, flip map, skeleton."""
    names: List[str] = list(COCO_PERSON_KEYPOINT_NAMES)
    return {"thing_classes": ["person"], "thing_dataset_id_to_contiguous_id": {1: 0},
            "keypoint_names": tuple(names),
            "keypoint_flip_map": keypoint_flip_map_from_names(names),
            "keypoint_connection_rules": connection_rules_from_skeleton(names, COCO_PERSON_SKELETON)}
