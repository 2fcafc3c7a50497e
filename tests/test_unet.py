import pytest
import torch

from gambar.generators.diffusion.unet import PRESETS, UNet


@pytest.mark.parametrize("preset", ["unet-tiny", "unet-s"])
def test_unet_keeps_shape_and_uses_text(preset):
    torch.manual_seed(0)
    net = UNet(PRESETS[preset])
    with torch.no_grad():  # zero-initialised outputs would hide the text's effect
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    x = torch.randn(2, 3, 32, 32)
    t = torch.tensor([3, 900])
    states = torch.randn(2, 5, 384)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    pooled = torch.randn(2, 384)
    out = net(x, t, states, mask, pooled)
    assert out.shape == x.shape
    other = net(x, t, states + 1.0, mask, pooled)
    assert not torch.allclose(out, other), "the output ignores the text"
    # masked-out tokens must not matter
    changed = states.clone()
    changed[1, 2:] = 100.0
    same = net(x, t, changed, mask, pooled)
    torch.testing.assert_close(out[1], same[1], atol=1e-5, rtol=1e-5)


def test_unet_rejects_sizes_it_cannot_downsample():
    net = UNet(PRESETS["unet-tiny"])
    with pytest.raises(ValueError, match="does not fit"):
        net(torch.randn(1, 3, 30, 30), torch.tensor([1]), torch.randn(1, 2, 384),
            torch.ones(1, 2, dtype=torch.bool), torch.randn(1, 384))


def test_unet_starts_as_zero_predictor():
    net = UNet(PRESETS["unet-tiny"])
    out = net(torch.randn(1, 3, 32, 32), torch.tensor([5]), torch.randn(1, 2, 384),
              torch.ones(1, 2, dtype=torch.bool), torch.randn(1, 384))
    assert out.abs().max().item() == 0.0
