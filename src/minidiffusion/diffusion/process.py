"""The forward process q(x_t | x0), conversions between x0, ε and v, the posterior, and the training loss.

Every coefficient is computed in float64 and only then cast (1 - ᾱ_t is ~1e-4 near t = 0).
Notation (Ho et al. 2020): x_t = √ᾱ_t · x0 + √(1-ᾱ_t) · ε, t 0-based. v-prediction (Salimans & Ho 2022):
v = √ᾱ_t · ε - √(1-ᾱ_t) · x0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import Schedule


def q_sample(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x0) with the given ε.  x0, noise (N, C, H, W); t (N,) -> (N, C, H, W)."""
    return (schedule.coefficient("sqrt_alphas_cumprod", t) * x0
            + schedule.coefficient("sqrt_one_minus_alphas_cumprod", t) * noise)


def x0_from_eps(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    ab = schedule.alphas_cumprod
    return schedule.at(ab.rsqrt(), t) * x_t - schedule.at((1 / ab - 1).sqrt(), t) * eps


def eps_from_x0(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    ab = schedule.alphas_cumprod
    return schedule.at((1 - ab).rsqrt(), t) * x_t - schedule.at((ab / (1 - ab)).sqrt(), t) * x0


def v_target(schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return (schedule.coefficient("sqrt_alphas_cumprod", t) * eps
            - schedule.coefficient("sqrt_one_minus_alphas_cumprod", t) * x0)


def eps_from_v(schedule: Schedule, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """ε = √(1-ᾱ) · x_t + √ᾱ · v."""
    return (schedule.coefficient("sqrt_one_minus_alphas_cumprod", t) * x_t
            + schedule.coefficient("sqrt_alphas_cumprod", t) * v)


def q_posterior(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor,
                t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x0) (Ho et al. eq. 6-7). Variance shaped (N, 1, 1, 1)."""
    ab, ab_prev, beta = schedule.alphas_cumprod, schedule.alphas_cumprod_prev, schedule.betas
    coef_x0 = ab_prev.sqrt() * beta / (1 - ab)
    coef_xt = (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
    mean = schedule.at(coef_x0, t) * x0 + schedule.at(coef_xt, t) * x_t
    return mean, schedule.at(schedule.posterior_variance, t)


Network = Callable[..., torch.Tensor]  # net(x, level) or net(x, level, cond)


def call_network(net: Network, x: torch.Tensor, level: torch.Tensor, cond=None) -> torch.Tensor:
    """The network at (x, level), given its condition only when there is one (so any (x, t) callable works)."""
    return (net(x, level) if cond is None else net(x, level, cond)).float()


def fast_network(net, *, dtype: torch.dtype | None = None, channels_last: bool = False, cuda_graph: bool = False):
    """``net`` behind :class:`FastEpsModel` when any speed option is on, else ``net`` itself."""
    if dtype is not None or channels_last or cuda_graph:
        return FastEpsModel(net, dtype=dtype, channels_last=channels_last, cuda_graph=cuda_graph)
    return net


class FastEpsModel:
    """A network called the fast way for sampling: autocast to ``dtype``, channels_last input, and with
    ``cuda_graph`` on a CUDA input one CUDA graph per input shape, captured on first use and replayed every step.

    A replay launches the whole network at once: no Python, no per-layer launch cost, and nothing that waits on
    the GPU, so a sampler's loop runs ahead of the device. Returns float32 in the contiguous layout, a new tensor
    each call (the graph's output buffer is overwritten by the next replay). Works with a ``torch.compile``d net.
    With ``channels_last`` a module's weights are converted in place (same values, another memory layout).
    """

    def __init__(self, net: Network, *, dtype: torch.dtype | None = None, channels_last: bool = False,
                 cuda_graph: bool = False):
        if channels_last and isinstance(net, torch.nn.Module):
            net.to(memory_format=torch.channels_last)
        self.net, self.dtype, self.channels_last, self.cuda_graph = net, dtype, channels_last, cuda_graph
        self._graphs: dict[tuple, tuple] = {}

    def _forward(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        # cache_enabled=False: autocast's cache of cast weights must not outlive a graph capture
        with torch.autocast(x_t.device.type, dtype=self.dtype, enabled=self.dtype is not None, cache_enabled=False):
            return self.net(x_t, t) if cond is None else self.net(x_t, t, cond)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        if not (self.cuda_graph and x_t.is_cuda):
            out = self._forward(x_t, t, cond)
        else:
            key = (tuple(x_t.shape), x_t.dtype, x_t.device, t.dtype, None if cond is None else cond.dtype)
            if key not in self._graphs:
                self._graphs[key] = self._capture(x_t, t, cond)
            graph, static, out = self._graphs[key]
            for buffer, value in zip(static, (x_t, t, cond)):
                if buffer is not None:
                    buffer.copy_(value)
            graph.replay()
        return out.to(torch.float32, memory_format=torch.contiguous_format, copy=True)

    def _capture(self, x_t: torch.Tensor, t: torch.Tensor, cond) -> tuple:
        """(graph, its input buffers (x, t, cond or None), its output buffer) for inputs shaped as these."""
        static = (x_t.clone(), t.clone(), None if cond is None else cond.clone())
        side = torch.cuda.Stream(x_t.device)
        side.wait_stream(torch.cuda.current_stream(x_t.device))
        with torch.cuda.stream(side):  # warm-up off the main stream, as capture requires: autotuning, compiling
            for _ in range(2):
                self._forward(*static)
        torch.cuda.current_stream(x_t.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._forward(*static)
        return graph, static, out


def diffusion_loss(net: torch.nn.Module, schedule: Schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   prediction: str = "eps", min_snr_gamma: float = 0.0, cond=None) -> torch.Tensor:
    """Mean squared error of the network's ε (or v) prediction at q_sample(x0, t, noise), per example (N,).

    With ``min_snr_gamma`` > 0 each example is weighted by min(SNR_t, γ)/SNR_t for ε (min(SNR_t, γ)/(SNR_t + 1)
    for v), SNR_t = ᾱ_t/(1-ᾱ_t): the Min-SNR strategy (Hang et al. 2023), which stops the nearly clean
    timesteps from dominating and speeds up convergence.
    """
    x_t = q_sample(schedule, x0, t, noise)
    target = noise if prediction == "eps" else v_target(schedule, x0, t, noise)
    loss = (call_network(net, x_t, t, cond) - target).square().mean(dim=(1, 2, 3))
    if min_snr_gamma > 0:
        def weights() -> torch.Tensor:
            snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
            return snr.clamp(max=min_snr_gamma) / (snr if prediction == "eps" else snr + 1)

        loss = loss * schedule.cached(("min_snr", min_snr_gamma, prediction), weights, t).view(-1)
    return loss
