"""The ATen-only NMS equals torchvision's: same kept boxes in the same order, plain and
batched (class-aware), with ties in score, duplicates, empty input and one box."""
import pytest
import torch
from torchvision.ops import batched_nms as tv_batched_nms
from torchvision.ops import nms as tv_nms

from mrcnn_plugin.layers.nms import batched_nms, batched_nms_aten, nms_aten


def _boxes(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("n", [0, 1, 2, 17, 400, 900])
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_matches_torchvision(n, threshold):
    """Kept indices and their order are identical, including tied scores (input order wins)."""
    g = torch.Generator().manual_seed(n)
    boxes = _boxes(n, g)
    scores = torch.rand(n, generator=g)
    scores[::5] = 0.5  # ties
    if n > 3:
        boxes[3] = boxes[2]  # an exact duplicate
    assert torch.equal(nms_aten(boxes, scores, threshold), tv_nms(boxes, scores, threshold))


@pytest.mark.parametrize("n", [0, 1, 30, 900])
def test_batched_nms_matches_torchvision(n):
    """Class-aware NMS: boxes of different classes never suppress each other; same result
    and order as torchvision (whose path for <= 1000 boxes keeps ties in input order)."""
    g = torch.Generator().manual_seed(100 + n)
    boxes = _boxes(n, g)
    scores = torch.rand(n, generator=g)
    scores[::7] = 0.25
    idxs = torch.randint(0, 6, (n,), generator=g)
    assert torch.equal(batched_nms_aten(boxes, scores, idxs, 0.5), tv_batched_nms(boxes, scores, idxs, 0.5))


def test_batched_nms_large_input_same_set():
    """Above 1000 boxes torchvision switches to a per-class loop whose output order of equal
    scores is unspecified; the kept set and the score order still agree."""
    g = torch.Generator().manual_seed(7)
    boxes = _boxes(3000, g)
    scores = torch.rand(3000, generator=g)
    idxs = torch.randint(0, 5, (3000,), generator=g)
    ours, theirs = batched_nms_aten(boxes, scores, idxs, 0.6), tv_batched_nms(boxes, scores, idxs, 0.6)
    assert torch.equal(torch.sort(ours)[0], torch.sort(theirs)[0])
    assert torch.equal(scores[ours], scores[theirs])


def test_overlapping_pair_hand_example():
    """Two boxes with IoU 0.6: a 0.5 threshold drops the lower-scored one, 0.7 keeps both."""
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 2.5, 10.0, 12.5]])  # IoU = 75 / 125 = 0.6
    scores = torch.tensor([0.4, 0.9])
    assert nms_aten(boxes, scores, 0.5).tolist() == [1]
    assert nms_aten(boxes, scores, 0.7).tolist() == [1, 0]


def test_scripted_batched_nms_is_aten_only():
    """Scripted, batched_nms compiles to ATen code (no torchvision op) and gives the same answer."""
    scripted = torch.jit.script(batched_nms)
    assert "torchvision" not in scripted.code
    g = torch.Generator().manual_seed(3)
    boxes, scores = _boxes(50, g), torch.rand(50, generator=g)
    idxs = torch.randint(0, 3, (50,), generator=g)
    assert torch.equal(scripted(boxes, scores, idxs, 0.5), tv_batched_nms(boxes, scores, idxs, 0.5))
