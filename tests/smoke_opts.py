"""Overrides that shrink a coco-mini recipe config to a smoke run of a few seconds on CPU (shared by
the COCO and Keypoints recipe tests)."""

COCO_MINI_SMOKE_OPTS = [
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "400", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
    # An untrained model scores every class low (an 80-class one near 1/81), under the default 0.05
    # threshold: score every detection, but only 10 per image.
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "10",
    "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "192",
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "192",
    "SOLVER.MAX_ITER", "3", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()",
    "SOLVER.CHECKPOINT_PERIOD", "100000", "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0",
]
