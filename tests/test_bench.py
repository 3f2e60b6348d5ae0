"""The benchmark harness (bench/) and the speed paths it measures: same numbers as the plain paths, records
with every field RESULTS.md relies on, anchors sized to our parameter count."""

import json
import sys
from pathlib import Path

import pytest
import torch

from minidiffusion.config import DiffusionConfig, replace_sample
from minidiffusion.diffusion import DDPM, cosine_schedule, ddim, ddpm_grid, linear_schedule, make_objective
from minidiffusion.diffusion.process import FastEpsModel, fast_network, q_sample
from minidiffusion.models.unet import SimpleUNet
from minidiffusion.sampling import Options, generate

from .helpers import tiny_config

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import common  # noqa: E402  (bench/ is a folder of scripts, not a package)
import levers  # noqa: E402
import sample_step  # noqa: E402
import summary  # noqa: E402
import train_step  # noqa: E402

RECORD_FIELDS = {"name", "machine", "anchor", "ours", "theirs", "unit", "ratio", "date", "torch", "command"}


@pytest.mark.parametrize("schedule", [linear_schedule(), cosine_schedule(50)], ids=["linear", "cosine"])
def test_coefficient_tables_give_exactly_what_at_gives(schedule):
    t = torch.arange(schedule.num_timesteps).flip(0)
    ab = schedule.alphas_cumprod
    assert torch.equal(schedule.coefficient("sqrt_alphas_cumprod", t), schedule.at(ab.sqrt(), t))
    assert torch.equal(schedule.coefficient("sqrt_one_minus_alphas_cumprod", t), schedule.at((1 - ab).sqrt(), t))
    # kept: the second call indexes the same float32 table instead of building one
    assert len(schedule._tables) == 2
    schedule.coefficient("sqrt_alphas_cumprod", t[:3])
    assert len(schedule._tables) == 2


def test_min_snr_loss_from_a_kept_table_equals_the_legacy_loss_bit_for_bit():
    from minidiffusion.diffusion import diffusion_loss

    s = linear_schedule()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 500, 998, 999])
    net = lambda x_t, t: 0.5 * x_t  # noqa: E731
    for _ in range(2):  # the second call reads the kept table
        assert torch.equal(diffusion_loss(net, s, x0, t, noise, min_snr_gamma=5.0),
                           levers.legacy_diffusion_loss(net, s, x0, t, noise, min_snr_gamma=5.0))
    assert ("min_snr", 5.0, "eps") in {key for key, _ in s._tables}


def test_q_sample_matches_the_formula_with_at():
    s = linear_schedule()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 1, 4, 4, generator=g), torch.randn(5, 1, 4, 4, generator=g)
    t = torch.tensor([0, 1, 500, 998, 999])
    ab = s.alphas_cumprod
    expected = s.at(ab.sqrt(), t) * x0 + s.at((1 - ab).sqrt(), t) * noise
    assert torch.equal(q_sample(s, x0, t, noise), expected)


def test_fast_eps_model_on_cpu_returns_the_network_output_as_a_fresh_float32_tensor():
    net = SimpleUNet(1, 8, base_channels=8, channel_mults=(1, 2)).eval()
    torch.nn.init.normal_(net.conv_out.weight)  # a non-zero output
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 10, 100])
    with torch.no_grad():
        plain = net(x, t)
        fast = FastEpsModel(net.to(memory_format=torch.channels_last), channels_last=True, cuda_graph=True)(x, t)
    assert fast.dtype == torch.float32 and fast.is_contiguous()
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)  # channels_last convolutions sum in another order
    assert fast_network(net) is net  # no option: the network itself, as before


def test_generate_with_speed_options_draws_nearly_the_same_images(tmp_path):
    """channels_last and bf16 autocast change the arithmetic, not the images (cuda_graph is a no-op on the CPU)."""
    cfg = tiny_config(tmp_path)
    net = SimpleUNet(1, 8, base_channels=8, channel_mults=(1, 2))
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    what = (make_objective(cfg.diffusion), replace_sample(cfg.sample, {"sampler": "ddim", "steps": 4}), 4)
    kw = dict(seed=3, shape=(1, 8, 8))
    plain = generate(net, *what, options=Options(output="float"), **kw)
    fast = generate(net, *what, options=Options(output="float", channels_last=True, cuda_graph=True), **kw)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    half = generate(net, *what, options=Options(output="float", precision="bf16"), **kw)
    assert not torch.equal(half, plain)  # bf16 did run ...
    assert (half - plain).abs().mean() < 0.01 and (half - plain).abs().max() < 0.2  # ... changing them by its rounding


def test_ddim_through_fast_eps_model_feeds_the_network_channels_last():
    net = SimpleUNet(3, 8, base_channels=8, channel_mults=(1, 2)).eval()  # 3 channels: the layouts differ
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    seen = []
    net.conv_in.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(
        memory_format=torch.channels_last) and not args[0].is_contiguous()))
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    ddpm = DDPM(DiffusionConfig())
    sigmas = ddpm.sigmas_at(ddpm_grid(1000, 5))
    fast = ddim(ddpm.denoiser(FastEpsModel(net, channels_last=True)), x_T, sigmas)
    assert seen == [True] * 5  # every step in the channels_last layout (sums in another order: 1e-4 apart)
    plain = ddim(ddpm.denoiser(net.to(memory_format=torch.contiguous_format)), x_T, sigmas)
    torch.testing.assert_close(fast, plain, atol=1e-3, rtol=0)


def test_preset_image_shapes_come_without_loading_data():
    assert common.image_shape(common.load_preset("quick")) == (1, 28)
    assert common.image_shape(common.load_preset("cifar10")) == (3, 32)


def test_diffusers_anchor_is_sized_within_ten_percent_of_ours():
    pytest.importorskip("diffusers")
    cfg = common.load_preset("quick", ["model.patch_size=1", "model.base_channels=32",
                                       "model.channel_mults=1,2,2"])
    models, notes = common.build_models(cfg, ["diffusers"], "matched")
    ours, theirs = models
    assert theirs.anchor == "diffusers" and not notes
    assert abs(theirs.params / ours.params - 1) <= 0.10


def test_diffusers_anchor_for_the_ddpm_variant_is_our_network_layer_for_layer():
    pytest.importorskip("diffusers")
    cfg = common.load_preset("cifar10", ["model.base_channels=8", "model.channel_mults=1,2", "model.norm_groups=0"])
    (ours, theirs), _ = common.build_models(cfg, ["diffusers"], "auto")
    assert theirs.params == ours.params
    assert theirs.net.unet.config.block_out_channels == (8, 16)
    assert theirs.net.unet.config.down_block_types == ("DownBlock2D", "AttnDownBlock2D")  # attention at 16x16


def test_diffusers_anchor_takes_the_presets_norm_groups_where_they_divide_its_width():
    cfg = common.load_preset("mnist")  # norm_groups = 32; the automatic groups of a 64-channel layer are 16
    assert common.diffusers_kwargs(cfg, 1, 28, 64)["norm_num_groups"] == 32
    assert common.diffusers_kwargs(cfg, 1, 28, 40)["norm_num_groups"] == 10  # a matched width 32 does not divide


def test_train_benchmark_smoke_appends_one_complete_record_per_anchor(tmp_path):
    pytest.importorskip("diffusers")
    results = tmp_path / "results.jsonl"
    records = train_step.main(["--preset", "quick", "--smoke", "--anchors", "diffusers", "--results", str(results),
                               "--round-seconds", "0", "--no-channels-last"])
    written = [json.loads(line) for line in results.read_text().splitlines()]
    assert written == records and len(written) == 1
    r = written[0]
    assert RECORD_FIELDS <= r.keys()
    assert r["anchor"] == "diffusers" and r["unit"] == "img/s" and r["name"] == "train quick"
    assert r["ratio"] == pytest.approx(r["ours"] / r["theirs"], rel=0.01)
    assert r["command"].startswith("python ")
    text = summary.table(summary.newest(written), markdown=True)
    assert "| train quick | cpu" in text


def test_sample_benchmark_smoke_times_our_network_and_our_sampler_loop(tmp_path, capsys):
    sample_step.main(["--preset", "quick", "--smoke", "--anchors", "", "--loop-steps", "2", "--no-record",
                      "--no-channels-last"])
    out = capsys.readouterr().out
    assert "ours (fp32 eager)" in out and "ours ddim×2 loop" in out


def test_levers_smoke_records_after_over_before(tmp_path):
    results = tmp_path / "levers.jsonl"
    records = levers.main(["--preset", "quick", "--smoke", "--levers", "schedule_tables,host_sync",
                           "--results", str(results)])
    assert [r["name"] for r in records] == ["lever schedule_tables quick", "lever host_sync quick"]
    for r in records:
        assert RECORD_FIELDS <= r.keys() and r["ratio"] == pytest.approx(r["ours"] / r["theirs"], rel=0.01)
    assert len(results.read_text().splitlines()) == 2


def test_summary_keeps_the_newest_record_of_each_kind():
    old = {"name": "train quick", "machine": "cpu 2-core", "anchor": "diffusers", "ours": 1.0, "theirs": 1.0,
           "unit": "img/s", "ratio": 1.0, "date": "2026-01-01T00:00:00+00:00", "ours_settings": "fp32 eager",
           "theirs_settings": "fp32 eager"}
    new = dict(old, ours=3.0, ratio=3.0, date="2026-01-02T00:00:00+00:00")
    assert summary.newest([old, new]) == [new]
