"""Interoperability with other frameworks.

- `mrcnn_plugin.integrations.torchvision`: torchvision's Mask / Keypoint R-CNN semantics as
  registered components (configs/torchvision/), and `torchvision_resize`.
- `mrcnn_plugin.integrations.detectron2`: `register()` puts this package's components into
  detectron2's registries under "Mrcnn" names.

Neither is imported here: importing a module registers its components. See README.md.
"""
