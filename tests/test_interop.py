"""diffusers interop: configs and tensor names both ways, exact forward equivalence, scheduler equivalence.

The equivalence tests need diffusers (the 'bench' extra) and skip without it; the config and file tests don't.
Widths are >= 128 throughout: diffusers normalizes every layer in norm_num_groups = 32 groups, and our UNet
uses 32 groups only from 128 channels on, so narrower models have no exact counterpart (tested too).
"""

import importlib.util
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import minidiffusion
from minidiffusion import interop
from minidiffusion.checkpoint import load_checkpoint, save_checkpoint
from minidiffusion.cli import main
from minidiffusion.config import Config, load_config
from minidiffusion.diffusion import make_schedule
from minidiffusion.errors import UserError
from minidiffusion.models.unet import build_model, count_parameters

needs_diffusers = pytest.mark.skipif(importlib.util.find_spec("diffusers") is None, reason="needs diffusers")

# google/ddpm-cifar10-32's config.json and scheduler_config.json as published (diffusers 0.0.4 / 0.1.1). The
# config predates attention_head_dim: diffusers runs it at its default, 8 channels per head (32 heads).
DDPM_CIFAR10 = {
    "_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu",
    "block_out_channels": [128, 256, 256, 256], "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0, "flip_sin_to_cos": False, "freq_shift": 1, "in_channels": 3, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32, "out_channels": 3, "sample_size": 32,
    "time_embedding_type": "positional", "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
DDPM_SCHEDULER = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02,
                  "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": True, "num_train_timesteps": 1000,
                  "trained_betas": None, "variance_type": "fixed_large"}
# Small but exact: two levels of 128 channels, attention (2 heads of 64) at the 8x8 level, 1-channel images.
TINY = {**DDPM_CIFAR10, "sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [128, 128],
        "layers_per_block": 1, "down_block_types": ["AttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "AttnUpBlock2D"], "attention_head_dim": 64, "dropout": 0.1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two contended threads are slower than one for these sizes
    yield
    torch.set_num_threads(threads)


def perturb(net: torch.nn.Module, scale: float = 0.02) -> torch.nn.Module:
    """Move every parameter off its initial value (norms are 1/0, our conv_out is 0): every tensor matters."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net.eval()


def diffusers_unet(config: dict):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return perturb(UNet2DModel(**{k: v for k, v in config.items() if not k.startswith("_")}))


def ours_from(theirs) -> torch.nn.Module:
    cfg, channels, size = interop.config_from_diffusers(dict(theirs.config))
    net = build_model(cfg.model, channels, size).eval()
    net.load_state_dict(interop.state_dict_from_diffusers(net, theirs.state_dict()))
    return net


def assert_same_function(ours, theirs, channels: int, size: int, n: int = 2) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, channels, size, size, generator=g)
    t = torch.tensor([0, 999] + torch.randint(0, 1000, (n - 2,), generator=g).tolist())
    with torch.no_grad():
        mine, their = ours(x, t), theirs(x, t).sample
    assert mine.abs().max() > 0.1  # a real signal, not two zero outputs
    torch.testing.assert_close(mine, their, atol=1e-5, rtol=1e-5)


# -- configs (no diffusers needed) ------------------------------------------------------------------------------

def test_ddpm_cifar10_config_is_our_cifar10_preset():
    cfg, channels, size = interop.config_from_diffusers(DDPM_CIFAR10, DDPM_SCHEDULER)
    assert (channels, size) == (3, 32)
    assert cfg.model.num_heads == 32  # what diffusers runs; the weights were trained with one head
    preset = load_config("cifar10")
    # but for the head count and dropout (a training setting the file does not record), the paper's UNet
    assert cfg.model == preset.model.__class__(**{**vars(preset.model), "dropout": 0.0, "num_heads": 32})
    assert cfg.diffusion == preset.diffusion
    assert cfg.sample.variance == "large" and cfg.data.name == "cifar10"
    assert count_parameters(build_model(cfg.model, 3, 32)) == 35_746_307
    unet, scheduler = interop.config_to_diffusers(cfg, 3, 32)
    published = {k: v for k, v in DDPM_CIFAR10.items() if not k.startswith("_")}
    assert {k: unet[k] for k in published} == published and unet["attention_head_dim"] == 8
    published = {k: v for k, v in DDPM_SCHEDULER.items() if not k.startswith("_")}
    assert {k: scheduler[k] for k in published} == published


def test_config_round_trip_with_heads_and_cosine():
    cfg = Config().replace(model={"base_channels": 128, "channel_mults": [1, 2, 2], "num_res_blocks": 1,
                                  "attention_resolutions": [16, 8], "num_heads": 4, "dropout": 0.0,
                                  "norm_groups": 32},
                           diffusion={"schedule": "cosine", "num_timesteps": 500, "prediction": "v"},
                           sample={"variance": "small"})
    unet, scheduler = interop.config_to_diffusers(cfg, 3, 32)
    assert unet["attention_head_dim"] == 64 and unet["down_block_types"] == \
        ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]
    assert scheduler["beta_schedule"] == "squaredcos_cap_v2" and scheduler["prediction_type"] == "v_prediction"
    back, _, _ = interop.config_from_diffusers(unet, scheduler)
    assert (back.model, back.diffusion, back.sample.variance) == (cfg.model, cfg.diffusion, "small")


@pytest.mark.parametrize("change, match", [
    ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift"),
    ({"norm_eps": 1e-5}, "norm_eps"),
    ({"flip_sin_to_cos": True}, "flip_sin_to_cos"),
    ({"downsample_padding": 1}, "downsample_padding"),
    ({"class_embed_type": "timestep"}, "class_embed_type"),
    ({"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D"]},
     "CrossAttnDownBlock2D"),
    ({"up_block_types": ["UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"]}, "do not mirror"),
    ({"in_channels": 4, "out_channels": 4}, "in_channels=4"),
    ({"block_out_channels": [128, 192, 256, 256]}, "multiple of the first"),
    ({"down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
      "block_out_channels": [128, 128, 256, 256], "attention_head_dim": 64}, "different number of heads"),
    ({"sample_size": [32, 64]}, "square"),
])
def test_unsupported_unet_configs_raise(change, match):
    with pytest.raises(UserError, match=match):
        interop.config_from_diffusers({**DDPM_CIFAR10, **change})


def test_missing_keys_take_diffusers_defaults():
    # UNet2DModel's default norm_eps is 1e-5, not our 1e-6: a config that omits it describes another network
    without_eps = {k: v for k, v in DDPM_CIFAR10.items() if k != "norm_eps"}
    with pytest.raises(UserError, match="norm_eps=1e-05"):
        interop.config_from_diffusers(without_eps)
    # DDPMScheduler's default variance is fixed_small
    cfg, _, _ = interop.config_from_diffusers(DDPM_CIFAR10, {"beta_schedule": "linear"})
    assert cfg.sample.variance == "small"


@pytest.mark.parametrize("change, match", [
    ({"beta_schedule": "scaled_linear"}, "scaled_linear"),
    ({"trained_betas": [0.1, 0.2]}, "trained_betas"),
    ({"variance_type": "learned_range"}, "learned_range"),
    ({"prediction_type": "sample"}, "prediction_type"),
])
def test_unsupported_schedulers_raise(change, match):
    with pytest.raises(UserError, match=match):
        interop.config_from_diffusers(DDPM_CIFAR10, {**DDPM_SCHEDULER, **change})


def test_models_without_a_counterpart_are_refused_naming_the_presets_that_convert():
    # the automatic GroupNorm groups (norm_groups = 0) of a 32-wide model: 8 and 16 groups, diffusers has one number
    cfg = Config().replace(model={"base_channels": 32, "channel_mults": [1, 2], "attention_resolutions": [4]})
    with pytest.raises(UserError, match=r"norm_num_groups=32, but .* in 8 groups.*train with model.norm_groups=32, "
                                        r"as the ddpm-variant presets: mnist, mnist-flow"):
        interop.check_groups(build_model(cfg.model, 1, 8), 32)
    with pytest.raises(UserError, match="only the 'ddpm' UNet"):
        interop.config_to_diffusers(cfg.replace(model={"variant": "simple", "attention_resolutions": [14]}), 1, 8)
    with pytest.raises(UserError, match="patch_size=2: diffusers' UNet2DModel has no patch input"):
        interop.config_to_diffusers(cfg.replace(model={"patch_size": 2}), 1, 8)
    edm = cfg.replace(diffusion={"objective": "edm"}, sample={"sampler": "heun"})
    with pytest.raises(UserError, match="objective=edm: diffusers' EDMEulerScheduler feeds the network ln"):
        interop.config_to_diffusers(edm, 1, 8)
    shifted = cfg.replace(diffusion={"objective": "flow"}, sample={"sampler": "euler", "shift": 3.0})
    with pytest.raises(UserError, match="sample.shift=3: diffusers shifts its grid before"):
        interop.config_to_diffusers(shifted, 1, 8)


# -- files (no diffusers needed) ---------------------------------------------------------------------------------

def tiny_checkpoint(directory) -> tuple:
    cfg, channels, size = interop.config_from_diffusers(TINY, DDPM_SCHEDULER)
    cfg = cfg.replace(data={"name": "folder", "channels": 1, "image_size": 8})
    net = perturb(build_model(cfg.model, channels, size))
    state = net.state_dict()
    tensors = {f"model.{k}": v for k, v in state.items()} | {f"ema.{k}": v + 1 for k, v in state.items()}
    meta = {"data": {"name": "folder", "channels": channels, "image_size": size}}
    return save_checkpoint(directory, 7, cfg, tensors, meta), cfg


def test_files_round_trip_and_legacy_layouts(tmp_path):
    path, cfg = tiny_checkpoint(tmp_path / "ckpts")
    assert main(["convert", "--to-diffusers", str(path), "--out", str(tmp_path / "pipe")]) == 0
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DModel"]
    original = load_checkpoint(path)

    assert main(["convert", "--from-diffusers", str(tmp_path / "pipe"), "--out", str(tmp_path / "run")]) == 0
    converted = load_checkpoint(tmp_path / "run")
    assert converted.step == 0 and converted.meta["data"] == {"name": "folder", "channels": 1, "image_size": 8}
    assert (converted.config.model, converted.config.diffusion) == (cfg.model, cfg.diffusion)
    assert not any(k.startswith("optim.") for k in converted.tensors)
    for key, value in original.state_dict("ema").items():  # --to-diffusers exports the EMA by default
        assert torch.equal(converted.tensors[f"model.{key}"], value)
        assert torch.equal(converted.tensors[f"ema.{key}"], value)

    # A flat folder (google/ddpm-cifar10-32's layout) with pickled weights under pre-0.15 attention names.
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(tmp_path / "pipe" / "unet" / "config.json", flat / "config.json")
    shutil.copy(tmp_path / "pipe" / "scheduler" / "scheduler_config.json", flat / "scheduler_config.json")
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    tensors = load_file(tmp_path / "pipe" / "unet" / interop.WEIGHTS)
    renamed = {}
    for key, value in tensors.items():
        for new, before in old.items():
            key = key.replace(f".{new}.", f".{before}.")
        renamed[key] = value
    assert any(".proj_attn." in k for k in renamed)
    torch.save(renamed, flat / interop.LEGACY_WEIGHTS)
    legacy = load_checkpoint(interop.from_diffusers(flat, tmp_path / "run2"))
    assert legacy.tensors.keys() == converted.tensors.keys()
    assert all(torch.equal(legacy.tensors[k], converted.tensors[k]) for k in converted.tensors)


def test_convert_refuses_to_overwrite_and_reports_missing_files(tmp_path, capsys):
    path, _ = tiny_checkpoint(tmp_path / "ckpts")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["convert", "--to-diffusers", str(path), "--out", str(tmp_path / "full")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["convert", "--from-diffusers", str(tmp_path / "full"), "--out", str(tmp_path / "r")]) == 2
    assert "no diffusers UNet here" in capsys.readouterr().err
    assert main(["convert", "--out", str(tmp_path / "r")]) == 2  # one of --from-diffusers / --to-diffusers


def test_hub_id_without_network_says_how_to_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIDIFFUSION_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "--from-diffusers", "google/ddpm-cifar10-32", "--out", "runs/ddpm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hf download google/ddpm-cifar10-32 --local-dir ddpm-cifar10-32" in err
    assert not (tmp_path / "runs").exists()


# -- exact equivalence with diffusers ---------------------------------------------------------------------------

@needs_diffusers
def test_tiny_unet_matches_diffusers_both_ways():
    theirs = diffusers_unet(TINY)
    ours = ours_from(theirs)
    assert ours.down[0][1].num_heads == 2
    assert count_parameters(ours) == count_parameters(theirs)
    assert_same_function(ours, theirs, 1, 8, n=3)

    # and back: a (perturbed) network of ours loads strictly into the UNet2DModel our config describes
    from diffusers import UNet2DModel

    cfg, _, _ = interop.config_from_diffusers(TINY)
    mine = perturb(build_model(cfg.model, 1, 8))
    unet, _ = interop.config_to_diffusers(cfg, 1, 8)
    back = UNet2DModel(**{k: v for k, v in unet.items() if not k.startswith("_")}).eval()
    back.load_state_dict(interop.state_dict_to_diffusers(mine, mine.state_dict()), strict=True)
    assert_same_function(mine, back, 1, 8)


@needs_diffusers
@pytest.mark.parametrize("widths, groups", [([32, 64], 32), ([64, 128], 16), ([24, 48], 8)])
def test_narrow_unets_convert_with_their_groups_in_every_norm(widths, groups):
    """diffusers' norm_num_groups becomes model.norm_groups: narrow networks (such as the mnist presets' 64 channels
    in 32 groups) compute what diffusers computes, both ways."""
    config = {**TINY, "block_out_channels": widths, "attention_head_dim": None, "norm_num_groups": groups}
    theirs = diffusers_unet(config)
    ours = ours_from(theirs)
    assert {m.num_groups for m in ours.modules() if isinstance(m, torch.nn.GroupNorm)} == {groups}
    assert_same_function(ours, theirs, 1, 8, n=2)
    cfg, _, _ = interop.config_from_diffusers(config)
    assert cfg.model.norm_groups == groups and interop.config_to_diffusers(cfg, 1, 8)[0]["norm_num_groups"] == groups


@needs_diffusers
def test_ddpm_cifar10_architecture_matches_diffusers():
    theirs = diffusers_unet(DDPM_CIFAR10)
    ours = ours_from(theirs)
    assert count_parameters(ours) == count_parameters(theirs) == 35_746_307
    assert_same_function(ours, theirs, 3, 32)


@needs_diffusers
def test_pipeline_folders_both_ways(tmp_path):
    from diffusers import DDPMPipeline, DDPMScheduler

    theirs = diffusers_unet(TINY)
    DDPMPipeline(unet=theirs, scheduler=DDPMScheduler(**DDPM_SCHEDULER)).save_pretrained(tmp_path / "pipe")
    assert main(["convert", "--from-diffusers", str(tmp_path / "pipe"), "--out", str(tmp_path / "run")]) == 0
    model = minidiffusion.load(tmp_path / "run")
    assert_same_function(model.net, theirs, 1, 8)
    assert model.sample(2, steps=2).shape == (2, 1, 8, 8)
    assert main(["sample", "--checkpoint", str(tmp_path / "run"), "--n", "2", "--steps", "2", "--no-progress",
                 "--out", str(tmp_path / "grid.png")]) == 0

    assert main(["convert", "--to-diffusers", str(tmp_path / "run"), "--out", str(tmp_path / "back")]) == 0
    pipe = DDPMPipeline.from_pretrained(tmp_path / "back")
    assert_same_function(model.net, pipe.unet.eval(), 1, 8)
    assert pipe.scheduler.config.variance_type == "fixed_large"
    torch.testing.assert_close(pipe.scheduler.alphas_cumprod, theirs_alphas(DDPM_SCHEDULER))


@needs_diffusers
def test_num_heads_override_runs_the_weights_with_one_head(tmp_path, caplog):
    """Without attention_head_dim (as google/ddpm-*), diffusers uses heads of 8 channels; --num-heads 1 runs the
    same tensors as one head, which is what diffusers computes when told attention_head_dim=None."""
    from diffusers import DDPMPipeline, DDPMScheduler

    legacy = {k: v for k, v in TINY.items() if k != "attention_head_dim"}
    theirs = diffusers_unet(legacy)
    DDPMPipeline(unet=theirs, scheduler=DDPMScheduler(**DDPM_SCHEDULER)).save_pretrained(tmp_path / "pipe")
    (tmp_path / "pipe" / "unet" / "config.json").write_text(json.dumps(legacy))  # as published: no such key
    caplog.set_level("WARNING", logger="minidiffusion")
    as_diffusers = minidiffusion.load(interop.from_diffusers(tmp_path / "pipe", tmp_path / "a"))
    assert as_diffusers.config.model.num_heads == 16 and "--num-heads 1" in caplog.text
    assert_same_function(as_diffusers.net, theirs, 1, 8)
    assert main(["convert", "--from-diffusers", str(tmp_path / "pipe"), "--out", str(tmp_path / "b"),
                 "--num-heads", "1"]) == 0
    one_head = minidiffusion.load(tmp_path / "b")
    assert one_head.config.model.num_heads == 1
    single = diffusers_unet({**legacy, "attention_head_dim": None})
    single.load_state_dict(theirs.state_dict())
    assert_same_function(one_head.net, single, 1, 8)


def theirs_alphas(config: dict) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**{k: v for k, v in config.items() if not k.startswith("_")}).alphas_cumprod


@needs_diffusers
@pytest.mark.parametrize("scheduler", [
    DDPM_SCHEDULER,
    {"num_train_timesteps": 500, "beta_start": 0.001, "beta_end": 0.05, "beta_schedule": "linear"},
    {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
    {"num_train_timesteps": 4000, "beta_schedule": "squaredcos_cap_v2"},
])
def test_converted_schedule_equals_diffusers(scheduler):
    cfg, _, _ = interop.config_from_diffusers(DDPM_CIFAR10, scheduler)
    ours = make_schedule(cfg.diffusion).alphas_cumprod.float()  # float64 inside; diffusers holds float32
    torch.testing.assert_close(ours, theirs_alphas(scheduler), atol=1e-6, rtol=1e-5)
    _, back = interop.config_to_diffusers(cfg, 3, 32)
    torch.testing.assert_close(theirs_alphas(back), theirs_alphas(scheduler), atol=0, rtol=0)


@needs_diffusers
@pytest.mark.parametrize("steps", [2, 4, 10, 50])
def test_a_ddpm_pipeline_visits_our_uniform_timesteps(steps):
    """The export used to write diffusers' default spacing, 'leading', which visits other timesteps than ours. (One
    step is the exception: diffusers' linspace then visits t = 0, ours t = T-1.)"""
    from diffusers import DDPMScheduler

    from minidiffusion.diffusion import ddpm_grid

    _, scheduler = interop.config_to_diffusers(Config().replace(data={"name": "folder", "channels": 1,
                                                                       "image_size": 8}), 1, 8)
    theirs = DDPMScheduler.from_config(scheduler)
    theirs.set_timesteps(steps)
    assert theirs.timesteps.tolist() == ddpm_grid(1000, steps).tolist()


@needs_diffusers
@pytest.mark.parametrize("steps", [3, 8])
def test_a_flow_checkpoint_samples_in_diffusers_as_our_euler(tmp_path, steps):
    """A checkpoint of the mnist-flow preset (its whole network: 64 to 128 channels, 32 GroupNorm groups) converts
    to a DDPMPipeline with diffusers' flow-matching Euler scheduler; diffusers alone then draws our euler samples, to
    float32."""
    from diffusers import DDPMPipeline

    from minidiffusion.config import load_config

    cfg = load_config("mnist-flow", ["sample.sampler=euler", f"sample.steps={steps}", "sample.guidance=1"])
    channels, size = 1, 28
    net = perturb(build_model(cfg.model, channels, size), scale=0.05)
    state = {f"{prefix}.{k}": v.clone() for prefix in ("model", "ema") for k, v in net.state_dict().items()}
    meta = {"data": {"name": "mnist", "channels": channels, "image_size": size}}
    path = save_checkpoint(tmp_path / "ckpts", steps, cfg, state, meta)
    assert main(["convert", "--to-diffusers", str(path), "--out", str(tmp_path / "pipe")]) == 0

    pipe = DDPMPipeline.from_pretrained(tmp_path / "pipe")
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(2, channels, size, size, generator=generator)
    pipe.scheduler.set_timesteps(steps)
    x = noise.clone()
    with torch.no_grad():
        for t in pipe.scheduler.timesteps:
            x = pipe.scheduler.step(pipe.unet(x, t).sample, t, x).prev_sample
    theirs = x
    ours = _euler_from_noise(minidiffusion.load(path), noise)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # and the pipeline's own loop (its noise, its [0, 1] output) runs the same steps
    out = pipe(batch_size=1, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
               output_type="np").images
    assert out.shape == (1, size, size, channels) and 0 <= out.min() and out.max() <= 1


def _euler_from_noise(model, noise: torch.Tensor) -> torch.Tensor:
    """Our euler sampler on ``model``'s default grid, from the given noise (float32, model range)."""
    from minidiffusion.diffusion import make_objective
    from minidiffusion.diffusion.registry import SAMPLERS

    objective, sample = make_objective(model.config.diffusion), model.config.sample
    sigmas = objective.sigmas(sample.steps, sample)
    x = objective.prior(noise, float(sigmas[0]))
    return SAMPLERS["euler"].fn(objective.denoiser(model.net), x, sigmas)


@needs_diffusers
def test_a_conditional_checkpoint_converts_both_ways_with_its_class_embedding(tmp_path):
    """A class-conditional network is diffusers' UNet2DModel with num_class_embeds (the classes and our "no class",
    last): the same outputs for every class, to float32, and the class names back on the way home."""
    from diffusers import UNet2DModel

    from minidiffusion.checkpoint import data_record

    cfg, channels, size = interop.config_from_diffusers(TINY, DDPM_SCHEDULER)
    cfg = cfg.replace(data={"name": "folder", "channels": 1, "image_size": 8, "conditional": True})
    classes = ("cat", "dog", "eel")
    net = perturb(build_model(cfg.model, channels, size, len(classes))).eval()
    state = {f"{prefix}.{k}": v.clone() for prefix in ("model", "ema") for k, v in net.state_dict().items()}
    path = save_checkpoint(tmp_path / "ckpts", 5, cfg, state, {"data": data_record("folder", 1, 8, classes)})
    assert main(["convert", "--to-diffusers", str(path), "--out", str(tmp_path / "pipe")]) == 0

    theirs = UNet2DModel.from_pretrained(tmp_path / "pipe" / "unet").eval()
    assert theirs.config.num_class_embeds == len(classes) + 1
    x, t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 10, 500, 999])
    c = torch.tensor([0, 1, 2, 3])  # 3: "no class"
    with torch.no_grad():
        ours = net(x, t, c)
        torch.testing.assert_close(theirs(x, t, class_labels=c).sample, ours, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(ours[0], net(x, t, torch.tensor([1, 1, 2, 3]))[0])  # the class matters

    assert main(["convert", "--from-diffusers", str(tmp_path / "pipe"), "--out", str(tmp_path / "back")]) == 0
    back = minidiffusion.load(tmp_path / "back")
    assert back.classes == classes
    with torch.no_grad():
        torch.testing.assert_close(back.net(x, t, c), ours, rtol=1e-5, atol=1e-5)
