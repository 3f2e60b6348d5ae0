"""Checkpoints written before the one-denoiser sampling core (issue 25) still load and sample the same images.

tests/fixtures/before-25 holds three tiny 40-step runs (ddpm, edm, flow; each with a guide) written by the old code
and the float samples that code drew from them (seed 5, 6 steps, 3 images); the scorings cover every old
(objective, sampler) pair, guided, with churn, η and shift. The new path reparameterises ddpm into k-diffusion's
scaled variable, so equal means equal to float32 rounding, and the uint8 pixels equal."""

from pathlib import Path

import pytest
import torch

from minidiffusion.config import replace_sample
from minidiffusion.diffusion import make_objective
from minidiffusion.images import to_pixels
from minidiffusion.sampling import Options, generate, load_guide, load_model

FIXTURES = Path(__file__).parent / "fixtures" / "before-25"
RECORDED = torch.load(FIXTURES / "samples.pt")


@pytest.mark.parametrize("key", sorted(RECORDED["samples"]))
def test_old_checkpoints_sample_the_same_images(key):
    name, sampler, k = key.split("/")
    options = RECORDED["scorings"][name][int(k)][1]
    net, ckpt = load_model(FIXTURES / name)
    sample = replace_sample(ckpt.config.sample, {"sampler": sampler, "steps": 6, **options})
    guide = load_guide(ckpt) if sample.guidance != 1 else None
    got = generate(net, make_objective(ckpt.config.diffusion), sample, 3, seed=5, shape=ckpt.image_shape, guide=guide,
                   options=Options(output="float"))
    want = RECORDED["samples"][key]
    torch.testing.assert_close(got, want, atol=5e-6, rtol=0)
    assert torch.equal(to_pixels(got), to_pixels(want))
