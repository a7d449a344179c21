"""mrcnn_plugin: Mask R-CNN and Keypoint R-CNN with detectron2's math, scriptable as written."""
__version__ = "0.1.0"
