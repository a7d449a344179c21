"""Conv2d trains through a FrozenBN as one folded convolution (weight * scale, bias = shift),
with the same outputs and gradients as convolution followed by the norm, and stays scriptable."""
import torch
import torch.nn.functional as F

from mrcnn_plugin.layers import Conv2d, FrozenBatchNorm2d


def _conv_with_frozen_norm(bias: bool) -> Conv2d:
    g = torch.Generator().manual_seed(0)
    norm = FrozenBatchNorm2d(6)
    norm.weight.copy_(torch.rand(6, generator=g) + 0.5)
    norm.bias.copy_(torch.randn(6, generator=g))
    norm.running_mean.copy_(torch.randn(6, generator=g))
    norm.running_var.copy_(torch.rand(6, generator=g) + 0.1)
    conv = Conv2d(4, 6, kernel_size=3, padding=1, bias=bias, norm=norm, activation=torch.nn.ReLU())
    with torch.no_grad():
        conv.weight.copy_(torch.randn(6, 4, 3, 3, generator=g))
        if bias:
            conv.bias.copy_(torch.randn(6, generator=g))
    return conv


def _explicit(conv: Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The unfolded definition: convolution, then the FrozenBN's affine map, then ReLU."""
    y = F.conv2d(x, conv.weight, conv.bias, 1, 1)
    n = conv.norm
    y = (y - n.running_mean.view(1, -1, 1, 1)) / (n.running_var.view(1, -1, 1, 1) + n.eps).sqrt()
    return F.relu(y * n.weight.view(1, -1, 1, 1) + n.bias.view(1, -1, 1, 1))


def test_folded_training_forward_and_gradients_equal_conv_then_norm():
    """With gradients flowing, output, input gradient and weight/bias gradients equal the
    unfolded computation's (with and without a convolution bias)."""
    for bias in (False, True):
        conv = _conv_with_frozen_norm(bias)
        assert conv._folds_frozen_norm(torch.zeros(1))
        x = torch.randn(2, 4, 9, 11, generator=torch.Generator().manual_seed(1))
        grad_out = torch.randn(2, 6, 9, 11, generator=torch.Generator().manual_seed(2))
        x1 = x.clone().requires_grad_()
        out = conv(x1)
        out.backward(grad_out)
        grads = [p.grad.clone() for p in (conv.weight, conv.bias) if p is not None]
        conv.zero_grad()
        x2 = x.clone().requires_grad_()
        expected = _explicit(conv, x2)
        expected.backward(grad_out)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
        for got, want in zip(grads, [p.grad for p in (conv.weight, conv.bias) if p is not None]):
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_frozen_weights_and_inputs_use_the_norm_and_scripting_keeps_it():
    """Without gradients (frozen stage, or no_grad inference of trainable weights) the norm
    runs as its own op; the scripted module gives the same output as eager."""
    conv = _conv_with_frozen_norm(False)
    conv.weight.requires_grad_(False)
    x = torch.randn(1, 4, 8, 8)
    assert not conv._folds_frozen_norm(x)
    torch.testing.assert_close(conv(x), _explicit(conv, x), atol=1e-5, rtol=1e-5)
    scripted = torch.jit.script(conv)
    torch.testing.assert_close(scripted(x), conv(x), atol=1e-6, rtol=0)
    conv.weight.requires_grad_(True)
    with torch.no_grad():  # trainable weights, but inference: eager computes what scripted does
        assert not conv._folds_frozen_norm(x)
