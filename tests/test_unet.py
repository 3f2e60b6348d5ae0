import tomllib

import pytest
import torch

from minidiffusion.config import Config, ModelConfig, load_config, preset_names
from minidiffusion.errors import UserError
from minidiffusion.models.unet import SimpleUNet, UNet, build_model, count_parameters, timestep_embedding

TINY = dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(14, 16), dropout=0.0)


def tiny(variant, channels, size):
    if variant == "ddpm":
        return UNet(channels, size, **TINY)
    return SimpleUNet(channels, size, base_channels=8, channel_mults=(1, 2))


@pytest.mark.parametrize("variant", ["ddpm", "simple"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_shapes_determinism_and_gradients(variant, channels, size):
    net = tiny(variant, channels, size)
    x, t = torch.randn(3, channels, size, size), torch.tensor([0, 500, 999])
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.equal(out, net(x, t)), "eval of the same input is deterministic"
    assert torch.count_nonzero(out) == 0, "the output convolution starts at zero"
    torch.nn.init.normal_(net.conv_out.weight)  # so gradients reach every layer
    net(x, t).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing}"


def test_ddpm_cifar10_preset_is_the_papers_35_7m_model():
    cfg = load_config("cifar10")
    n = count_parameters(build_model(cfg.model, 3, 32))
    assert n == 35_746_307  # diffusers' google/ddpm-cifar10-32 UNet2DModel has exactly this many


def test_channel_multipliers_do_not_compound():
    net = UNet(1, 32, base_channels=32, channel_mults=(1, 2, 2, 2), num_res_blocks=1, attention_resolutions=())
    widths = {m.conv2.out_channels for m in net.modules() if hasattr(m, "conv2")}
    assert widths == {32, 64}


def test_time_embedding_known_values():
    emb = timestep_embedding(torch.tensor([0, 1]), 8)
    assert torch.allclose(emb[0], torch.tensor([0, 0, 0, 0, 1, 1, 1, 1.0]))
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(4) / 3)
    assert torch.allclose(emb[1], torch.cat([torch.sin(freqs), torch.cos(freqs)]))


@pytest.mark.parametrize("size", [30, 27])
def test_size_the_depth_cannot_take_is_a_clear_error(size):
    with pytest.raises(UserError, match="divisible by 4"):
        UNet(1, size, base_channels=8, channel_mults=(1, 2, 2))


def test_base_channels_must_fit_group_norm():
    with pytest.raises(UserError, match="multiple of 8"):
        build_model(ModelConfig(base_channels=12), 1, 32)


def test_norm_groups_sets_every_group_norm_and_is_left_out_of_records_at_its_automatic_zero():
    """model.norm_groups = 0 keeps the automatic groups (64 channels: 16 groups, 128: 32) and the run's config.toml
    as it was before the key existed; the mnist preset's 32 normalizes the 64-channel layers in groups of 2 channels
    and changes no weight (GroupNorm's parameters are per channel)."""
    def groups(net):
        return {(m.num_channels, m.num_groups) for m in net.modules() if isinstance(m, torch.nn.GroupNorm)}

    auto = load_config("mnist", ["model.norm_groups=0"])
    assert groups(build_model(auto.model, 1, 28)) == {(64, 16), (128, 32), (192, 32), (256, 32)}
    assert "norm_groups" not in auto.to_toml()
    preset = load_config("mnist")
    net = build_model(preset.model, 1, 28)
    assert groups(net) == {(64, 32), (128, 32), (192, 32), (256, 32)} and "norm_groups = 32" in preset.to_toml()
    assert count_parameters(net) == count_parameters(build_model(auto.model, 1, 28))
    h = torch.randn(2, 64, 5, 5) * torch.arange(1.0, 65.0)[:, None, None]  # channels of unequal scales
    same_weights = build_model(auto.model, 1, 28).down[0][0].norm1
    assert not torch.allclose(net.down[0][0].norm1(h), same_weights(h))
    with pytest.raises(UserError, match="model.norm_groups=48 does not divide the 64 channels"):
        build_model(load_config("mnist", ["model.norm_groups=48"]).model, 1, 28)


def test_dropout_only_in_training():
    net = UNet(1, 16, base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,), dropout=0.5)
    torch.nn.init.normal_(net.conv_out.weight)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 4])
    net.eval()
    assert torch.equal(net(x, t), net(x, t))
    net.train()
    assert not torch.equal(net(x, t), net(x, t))


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds(name):
    cfg = load_config(name)
    channels, size = {"mnist": (1, 28), "fashion-mnist": (1, 28), "cifar10": (3, 32), "folder": (3, 0)}[cfg.data.name]
    size = cfg.data.image_size or size
    assert count_parameters(build_model(cfg.model, channels, size)) > 0


def test_patched_model_sees_pixel_patches_as_channels():
    cfg = ModelConfig(variant="simple", base_channels=8, channel_mults=(1, 2), dropout=0.0, patch_size=2)
    net = build_model(cfg, 1, 28)
    assert net.net.conv_in.in_channels == 4 and net.net.conv_out.out_channels == 4  # 2x2 patches of 1 channel
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([0, 500, 999])
    torch.nn.init.normal_(net.net.conv_out.weight)
    # Pixel (2i + a, 2j + b) of the output is channel 2a + b of the inner network's output at (i, j).
    inner = net.net(torch.nn.functional.pixel_unshuffle(x, 2), t)
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0, 1::2, 0::2], inner[:, 2])
    assert torch.equal(out[:, 0, 0::2, 1::2], inner[:, 1])


def test_patch_size_must_divide_the_image():
    # the sizes suggested are image sizes (multiples of p 2^(levels-1) = 8), not sizes of the 14x14 patch grid
    with pytest.raises(UserError, match=r"image size 28 cannot go through 3 levels on 2x2 patches \(size must be "
                                        r"divisible by 8: e.g. 8, 16, 24, 32\).* or a smaller model.patch_size"):
        build_model(ModelConfig(variant="simple", base_channels=8, channel_mults=(1, 2, 2), patch_size=2), 1, 28)
    with pytest.raises(UserError, match="patch_size=3 does not divide the image size 28"):
        build_model(ModelConfig(variant="simple", base_channels=8, channel_mults=(1,), patch_size=3), 1, 28)


def test_the_built_in_defaults_form_a_working_config():
    cfg = Config()  # no preset, no [model]: the default data (MNIST, 1x28x28) with the default network
    net = build_model(cfg.model, 1, 28)
    assert net(torch.zeros(2, 1, 28, 28), torch.tensor([0, 999])).shape == (2, 1, 28, 28)


def test_the_simple_unet_refuses_keys_it_would_ignore_and_does_not_save_them(tmp_path):
    with pytest.raises(UserError, match="model.num_res_blocks is for the ddpm variant"):
        Config.from_dict({"model": {"variant": "simple", "num_res_blocks": 3}})
    with pytest.raises(UserError, match="model.attention_resolutions is for the ddpm variant"):
        Config.from_dict({"model": {"variant": "simple", "attention_resolutions": [7]}})
    simple = Config.from_dict({"model": {"variant": "simple"}})
    text = simple.to_toml()
    assert "num_res_blocks" not in text and "attention_resolutions" not in text and 'variant = "simple"' in text
    assert Config.from_dict(tomllib.loads(text)) == simple  # what is left out comes back as it was
    assert "num_res_blocks = 2" in Config().to_toml()
    # what runs wrote before (every key, the old defaults) still loads, as the same config
    old = {"model": {"variant": "simple", "num_res_blocks": 2, "attention_resolutions": [16]}}
    assert Config.from_dict(old, saved=True) == simple
    (tmp_path / "config.toml").write_text('[model]\nvariant = "simple"\nattention_resolutions = [16]\n')
    assert load_config(tmp_path / "config.toml", saved=True) == simple
    with pytest.raises(UserError, match="attention_resolutions is for the ddpm variant"):  # an override still is
        load_config(tmp_path / "config.toml", ["model.attention_resolutions=[7]"], saved=True)


def test_attention_at_a_size_no_level_has_is_refused():
    with pytest.raises(UserError, match=r"attention_resolutions: 16 is not a feature size of this UNet \(its levels' "
                                        r"feature maps are 28, 14, 7\)"):
        build_model(ModelConfig(base_channels=8, channel_mults=(1, 2, 2), attention_resolutions=(16,)), 1, 28)
