"""FPN's top-down sum (add_upsampled_2x_): the in-place broadcast add equals nearest 2x upsampling
followed by a sum, bit for bit, in both memory formats, scripted, and in its gradients."""
import pytest
import torch
import torch.nn.functional as F

from mrcnn_plugin.modeling.backbone.fpn import add_upsampled_2x_


def _reference(lateral: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    return lateral + F.interpolate(top, scale_factor=2.0, mode="nearest")


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_equals_interpolate_then_add(memory_format):
    """Same values as interpolate + add (exactly: each output is the same single float sum), the
    result is the lateral tensor itself, and its memory format is kept."""
    g = torch.Generator().manual_seed(0)
    lateral = torch.randn(2, 5, 8, 12, generator=g).contiguous(memory_format=memory_format)
    top = torch.randn(2, 5, 4, 6, generator=g).contiguous(memory_format=memory_format)
    expected = _reference(lateral, top)
    out = add_upsampled_2x_(lateral, top)
    assert out.data_ptr() == lateral.data_ptr()
    assert out.is_contiguous(memory_format=memory_format)
    assert torch.equal(out, expected)


def test_scripted_equals_eager():
    """The function compiles with torch.jit.script and gives the same result (FPN.forward calls it)."""
    scripted = torch.jit.script(add_upsampled_2x_)
    lateral = torch.randn(1, 3, 6, 4).contiguous(memory_format=torch.channels_last)
    top = torch.randn(1, 3, 3, 2).contiguous(memory_format=torch.channels_last)
    assert torch.equal(scripted(lateral.clone(), top), _reference(lateral, top))


def test_other_layouts_fall_back_to_interpolate():
    """A non-contiguous lateral (here a slice) takes the interpolate path and gives the same sum."""
    g = torch.Generator().manual_seed(1)
    base = torch.randn(1, 4, 6, 16, generator=g)
    lateral = base[:, :, :, ::2]  # [1, 4, 6, 8], neither contiguous nor channels-last
    top = torch.randn(1, 4, 3, 4, generator=g)
    expected = _reference(lateral, top)
    assert torch.equal(add_upsampled_2x_(lateral, top), expected)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_gradients_equal_interpolate(memory_format):
    """Training back-propagates through the in-place view: the lateral gets the output gradient and
    the top map the sum of its 2x2 block's gradients, as through interpolate."""
    g = torch.Generator().manual_seed(2)
    lateral = torch.randn(2, 3, 6, 8, generator=g).contiguous(memory_format=memory_format)
    top = torch.randn(2, 3, 3, 4, generator=g).contiguous(memory_format=memory_format)
    weight = torch.randn(2, 3, 6, 8, generator=g)
    grads = []
    for fn in (lambda l, t: add_upsampled_2x_(l * 1.0, t), _reference):
        l_in, t_in = lateral.clone().requires_grad_(), top.clone().requires_grad_()
        (fn(l_in, t_in) * weight).sum().backward()
        grads.append((l_in.grad, t_in.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-6, atol=1e-6)
