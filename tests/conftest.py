import os

import pytest
import torch

os.environ.setdefault("MINIDIFFUSION_OFFLINE", "1")  # tests never touch the network
torch.set_num_threads(1)  # tiny models gain nothing from more; CI runs subprocesses beside pytest


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
