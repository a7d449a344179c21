"""The deployable detector: original-size uint8 images in, full-image results out.

Everything a service would otherwise re-implement happens inside the module, so
one TorchScript file is the whole model: resize to the config's test size,
normalize, pad, run the network, and rescale to each image's original size with
full-image masks. It holds only ATen operators when scripted.
"""
from typing import Dict, List

import torch
from torch import Tensor, nn

from ..data.resize import resize_bilinear_uint8
from ..data.transforms import resize_shortest_edge_size

__all__ = ["ExportableDetector", "resize_for_test"]


@torch.jit.script_if_tracing
def resize_for_test(image: Tensor, min_size: int, max_size: int) -> Tensor:
    """uint8 Tensor[3, H, W] -> uint8 Tensor[3, h, w] at detectron2's test-time size, with
    PIL's bilinear arithmetic (what detectron2's pipeline uses), bit for bit.

    Scripted even when the caller is traced, so the output size follows each input.
    """
    h, w = int(image.shape[-2]), int(image.shape[-1])
    if min_size <= 0:
        return image
    new_h, new_w = resize_shortest_edge_size(h, w, min_size, float(max_size))
    if new_h == h and new_w == w:
        return image
    return resize_bilinear_uint8(image, new_h, new_w)


class ExportableDetector(nn.Module):
    """Wraps a GeneralizedRCNN for deployment.

    forward(images): images is a list of uint8 Tensor[3, H, W] in the model's
    INPUT.FORMAT colour order, any sizes, on any device (they are moved to the
    model's). Returns per image a dict of tensors at the original size:
      boxes [N, 4] float XYXY pixels, scores [N], classes [N] int64,
      masks [N, H, W] uint8 (0/1) when the model has a mask head,
      keypoints [N, K, 3] (x, y, score) when it has a keypoint head.

    pad_batch (an attribute a loader may set, also from C++ with setattr): False (the
    default) runs the network once per image inside the one call, so an image's results
    never depend on what else is in the batch; True pads the batch to one tensor as
    detectron2 does, which pays on a GPU. Padding changes the features near the smaller
    images' right and bottom edges, and with them the detections; on CPU it also costs:
    three COCO photos of mixed orientation took 20.6 s padded against 10.0 s one by one
    (R50-FPN, AMD EPYC Zen 3, 2 threads).
    """

    def __init__(self, model: nn.Module, min_size_test: int, max_size_test: int):
        super().__init__()
        self.model = model
        self.min_size_test = int(min_size_test)
        self.max_size_test = int(max_size_test)
        self.pad_batch = False
        # Moves with .to(device): the device the network's weights live on.
        self.register_buffer("device_marker", torch.zeros(0), persistent=False)

    def forward(self, images: List[Tensor]) -> List[Dict[str, Tensor]]:
        device = self.device_marker.device
        inputs: List[Dict[str, Tensor]] = []
        for image in images:
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError("Each image must be a uint8 Tensor[3, H, W]")
            if image.dtype != torch.uint8:
                raise ValueError("Each image must be uint8 (0-255)")
            image = image.to(device)
            inputs.append({"image": resize_for_test(image, self.min_size_test, self.max_size_test),
                           "height": torch.tensor(int(image.shape[-2])),
                           "width": torch.tensor(int(image.shape[-1]))})
        if self.pad_batch:
            results = self.model.inference(inputs)
        else:
            results = [self.model.inference([x])[0] for x in inputs]
        outputs: List[Dict[str, Tensor]] = []
        for r in results:
            out: Dict[str, Tensor] = {"boxes": r["pred_boxes"], "scores": r["scores"], "classes": r["pred_classes"]}
            if "pred_masks" in r:
                out["masks"] = r["pred_masks"].to(torch.uint8)
            if "pred_keypoints" in r:
                out["keypoints"] = r["pred_keypoints"]
            outputs.append(out)
        return outputs
