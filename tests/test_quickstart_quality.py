"""The quickstart's quality gate (issue 3): >= 90% of 1,000 samples are digits the shipped classifier is sure of.

Marked `quality`, not run by default or in CI: it trains the full `quick` preset (about 9 minutes on 2 cores)
and, measured 2026-11-26, the preset does NOT yet pass (0.687 of samples confident with its autoguidance; see
bench/RESULTS.md, "Quickstart"). Run it with `bash scripts/test.sh -m quality` after tuning the preset.
"""

import pytest

from minidiffusion.config import load_config
from minidiffusion.evaluate import classifier_score
from minidiffusion.sampling import generate, load_guide, load_model
from minidiffusion.train import train


@pytest.mark.quality
def test_quick_preset_draws_recognisable_digits(tmp_path):
    train(load_config("quick"), tmp_path / "quick", progress=False)
    net, ckpt = load_model(tmp_path / "quick")
    images = generate(net, ckpt.config, 1000, seed=0, channels=1, image_size=28, guide=load_guide(ckpt))
    score = classifier_score(images)
    assert score["confident_fraction"] >= 0.9, score
