"""The denoiser contract: what a network must offer to be trained and sampled by the diffusion modules.

Any ``nn.Module`` that satisfies ``Denoiser`` plugs into ``DDPMModule`` (and the modules built on it) by
``class_path``, with no change to the module:

- ``forward(x, t, y=None, **cond) -> Tensor``: ``x`` is the noisy image (B, C, H, W); ``t`` is a (B,)
  tensor of noise levels: integer step indices 0…T−1 for the discrete DDPM process, or floats for a
  continuous process (the process's ``network_time`` says which); ``y`` is (B,) class labels, where
  −1 is the null label ∅ of classifier-free guidance; ``cond`` holds extra image conditions (e.g.
  DiffuseVAE's ``cond``). The output has the shape of ``x``.
- ``in_channels``: image channels the network reads and writes.
- ``num_classes``: number of classes for conditioning; 0 for an unconditional network, which must
  accept and ignore ``y=None``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Denoiser(Protocol):
    """A network ε_θ(x_t, t, y, **cond) (or x0- / v-prediction) behind a stated interface.

    The types are ``Any`` in the signature so that config parsing accepts any class whose ``forward``
    takes (x, t, y=None) plus optional keyword conditions; ``check_denoiser`` checks the attributes.
    """

    in_channels: int
    num_classes: int

    def forward(self, x: Any, t: Any, y: Any = None) -> Any: ...


def check_denoiser(net: Any) -> None:
    """Raise a TypeError naming what is missing when ``net`` does not meet the denoiser contract."""
    missing = [name for name in ("in_channels", "num_classes") if not isinstance(getattr(net, name, None), int)]
    if not callable(net):
        missing.append("forward(x, t, y=None, **cond)")
    if missing:
        raise TypeError(
            f"{type(net).__name__} does not meet the denoiser contract (networks/denoiser.py): missing "
            f"{', '.join(missing)}. Give the network integer attributes in_channels and num_classes "
            "(0 = unconditional) and forward(x, t, y=None, **cond)."
        )
