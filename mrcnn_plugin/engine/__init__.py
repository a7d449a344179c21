"""Training: optimizer and lr schedules, the Trainer loop, checkpoints for resuming,
metrics and curves, multi-process launching, and the `mrcnn train` command.

    from mrcnn_plugin.engine import Trainer, launch
    trainer = Trainer(cfg)                 # cfg from mrcnn_plugin.config.get_cfg()
    trainer.resume_or_load(resume=False)
    results = trainer.train()              # OUTPUT_DIR: checkpoints, metrics.json, events, curves.png

    launch(main_func, num_gpus_per_machine=2, args=(...,))   # also works unchanged under torchrun
"""
from .checkpointing import (capture_rng_state, checkpoint_candidates, load_newest_complete_checkpoint,
                            make_checkpointer, restore_rng_state)
from .launch import (all_gather_objects, find_free_port, get_local_rank, get_rank, get_world_size,
                     is_main_process, launch, synchronize)
from .optimizer import (NORM_MODULE_TYPES, SGDWithGradientClipping, WarmupCosineLR, WarmupLRScheduler,
                        WarmupMultiStepLR, WarmupStepWithFixedGammaLR, build_gradient_clipper, build_lr_scheduler,
                        build_optimizer, get_default_optimizer_params)
from .plots import plot_training_curves
from .trainer import SkipFirstSampler, Trainer, preserved_rng_state

__all__ = [
    "Trainer", "SkipFirstSampler", "preserved_rng_state",
    "build_optimizer", "build_lr_scheduler", "get_default_optimizer_params", "build_gradient_clipper",
    "SGDWithGradientClipping", "NORM_MODULE_TYPES", "WarmupLRScheduler", "WarmupMultiStepLR", "WarmupCosineLR",
    "WarmupStepWithFixedGammaLR",
    "launch", "get_rank", "get_world_size", "get_local_rank", "is_main_process", "synchronize",
    "all_gather_objects", "find_free_port",
    "make_checkpointer", "capture_rng_state", "restore_rng_state", "checkpoint_candidates",
    "load_newest_complete_checkpoint",
    "plot_training_curves",
]
