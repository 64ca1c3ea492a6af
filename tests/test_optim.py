"""networks.MuonAdamW: Newton–Schulz against its closed form on orthogonal matrices, the Muon step, the AdamW branch
against torch's AdamW, the parameter split, resuming, and training by class_path from the CLI."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from conftest import SWEEPS, TINY, run_cli

from networks import MuonAdamW, UNet
from networks.optim import NS_COEFFICIENTS, newton_schulz


def quintic_iterate(x: float, steps: int) -> float:
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        x = a * x + b * x ** 3 + c * x ** 5
    return x


def orthonormal_rows(r: int, n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, r, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.T.contiguous()  # r x n, Q Qᵀ = I


@pytest.mark.parametrize("shape", [(4, 6), (6, 4)])
def test_newton_schulz_maps_equal_singular_values_through_the_quintic(shape):
    """For G = c·Q with orthonormal rows (or columns), X₀ = Q/√r and every iteration maps the one singular value
    σ to aσ + bσ³ + cσ⁵, so NS₅(G) = p⁵(1/√r)·Q."""
    r = min(shape)
    q = orthonormal_rows(r, max(shape), seed=0)
    q = q if shape[0] <= shape[1] else q.T
    expected = quintic_iterate(1 / math.sqrt(r), 5) * q
    torch.testing.assert_close(newton_schulz(3.7 * q, steps=5, eps=0.0), expected, rtol=1e-10, atol=1e-12)


def test_newton_schulz_brings_a_random_matrix_near_orthogonal():
    """Singular values spread ten-fold come out within the quintic's band around 1 (five steps lift σ/‖G‖_F from
    about 0.03; far smaller ones need more steps)."""
    u, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(1)))
    v, _ = torch.linalg.qr(torch.randn(96, 32, generator=torch.Generator().manual_seed(2)))
    g = u @ torch.diag(torch.logspace(-0.5, 0.5, 32)) @ v.T
    s = torch.linalg.svdvals(newton_schulz(g))
    assert float(s.min()) > 0.6 and float(s.max()) < 1.25
    with pytest.raises(ValueError, match="2-D matrix"):
        newton_schulz(torch.randn(2, 3, 4))


def test_the_first_muon_step_is_the_scaled_orthogonal_factor_of_the_gradient():
    """Loss ⟨W, c·Q⟩ has the gradient c·Q; after one step W₁ = (1 − ηλ) W₀ − η · 0.2 √max(m, n) · p⁵(1/√r) · Q."""
    r, n, lr, wd = 8, 12, 0.01, 0.1
    q = orthonormal_rows(r, n, seed=3).float()
    w0 = torch.randn(r, n, generator=torch.Generator().manual_seed(4))
    w = torch.nn.Parameter(w0.clone())
    opt = MuonAdamW([w], lr=lr, weight_decay=wd)
    assert [g["use_muon"] for g in opt.param_groups] == [True]
    (w * (2.5 * q)).sum().backward()
    opt.step()
    expected = (1 - lr * wd) * w0 - lr * 0.2 * math.sqrt(n) * quintic_iterate(1 / math.sqrt(r), 5) * q
    torch.testing.assert_close(w.detach(), expected, rtol=1e-5, atol=1e-6)


def test_vectors_take_exactly_torch_adamw_steps():
    """Parameters that are not matrices follow torch.optim.AdamW with the same settings."""
    gen = torch.Generator().manual_seed(5)
    start = [torch.randn(7, generator=gen), torch.randn(3, generator=gen), torch.randn(1, 5, generator=gen)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(6)]
    runs = []
    for cls in (MuonAdamW, torch.optim.AdamW):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = cls(params, lr=0.03, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.2)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
        runs.append([p.detach() for p in params])
    for ours, torchs in zip(*runs):
        torch.testing.assert_close(ours, torchs, rtol=1e-6, atol=1e-7)


def test_the_unet_splits_into_muon_kernels_and_adamw_vectors():
    """Conv kernels and linear weights go to Muon; biases, norm gains and the one-channel output conv to AdamW."""
    net = UNet(in_channels=1, channels=[16, 32], down_sample=[True], attention=[False], num_layers=1, num_heads=2,
               t_emb_dim=16, num_classes=10, scale_shift=True)
    opt = MuonAdamW(net.parameters())
    muon, adamw = ({id(p) for p in g["params"]} for g in opt.param_groups)
    named = dict(net.named_parameters())
    assert id(named["conv_out.weight"]) in adamw and id(named["conv_in.weight"]) in muon
    assert all((id(p) in muon) == (p.ndim >= 2 and name != "conv_out.weight") for name, p in named.items())
    assert len(muon) + len(adamw) == len(named)


def test_bad_settings_are_refused_with_the_fix():
    w = torch.nn.Parameter(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="pass module.parameters"):
        MuonAdamW([{"params": [w], "lr": 0.1}])
    with pytest.raises(ValueError, match="momentum and betas"):
        MuonAdamW([w], momentum=1.0)
    with pytest.raises(ValueError, match="lr, weight_decay and eps"):
        MuonAdamW([w], lr=-1.0)


def test_a_restored_optimizer_continues_exactly_and_lowers_a_loss():
    """Three steps, a state_dict round trip, two more: the same weights as five steps straight; the loss drops."""
    def model() -> torch.nn.Module:
        torch.manual_seed(6)
        return torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 12))

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(64, 12, generator=gen)
    y = x @ torch.randn(12, 12, generator=gen)

    def steps(net, opt, k):
        for _ in range(k):
            opt.zero_grad()
            loss = (net(x) - y).pow(2).mean()
            loss.backward()
            opt.step()
        return float(loss)

    straight = model()
    opt = MuonAdamW(straight.parameters(), lr=0.01)
    first = steps(straight, opt, 3)
    saved = copy.deepcopy((straight.state_dict(), opt.state_dict()))  # the state tensors are updated in place
    last = steps(straight, opt, 2)

    resumed = model()
    resumed.load_state_dict(saved[0])
    opt2 = MuonAdamW(resumed.parameters(), lr=0.01)
    opt2.load_state_dict(saved[1])
    steps(resumed, opt2, 2)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert last < first


def test_muon_trains_the_ddpm_recipe_from_the_command_line():
    """``--model.init_args.optimizer networks.MuonAdamW`` keeps the config's lr, trains both groups, and the saved
    optimizer state holds the Muon momentum buffers a resumed run needs."""
    cli = run_cli("fit", "--config", str(TINY), "--trainer.limit_val_batches", "1",
                  "--model.init_args.optimizer", "networks.MuonAdamW")
    opt = cli.trainer.optimizers[0]
    assert isinstance(opt, MuonAdamW) and [g["use_muon"] for g in opt.param_groups] == [True, False]
    assert all(g["lr"] == 0.001 for g in opt.param_groups)
    state = torch.load("run/checkpoints/last.ckpt", weights_only=False)["optimizer_states"][0]
    muon_ids = state["param_groups"][0]["params"]
    assert state["param_groups"][0]["use_muon"] and all("momentum_buffer" in state["state"][i] for i in muon_ids)
    assert all("exp_avg_sq" in state["state"][i] for i in state["param_groups"][1]["params"])


def test_the_fashion_recipe_trains_by_muon_with_its_model_blocks_settings_and_mnist_keeps_adamw():
    """``sweeps/ddpm_fashion_mnist_cpu.yaml`` amends the shared model block by ``blocks/optimizer_muon.yaml``: the
    optimizer class changes, the block's lr and weight decay stay, and the MNIST recipe is untouched."""
    from cli import cli_main

    fashion = cli_main(["--config", str(SWEEPS / "ddpm_fashion_mnist_cpu.yaml")], run=False)
    mnist = cli_main(["--config", str(SWEEPS / "ddpm_mnist_cpu.yaml")], run=False)
    block = yaml.safe_load((SWEEPS / "blocks" / "model_ddpm_cpu.yaml").read_text())["init_args"]["optimizer"]
    muon, adamw = fashion.config.model.init_args.optimizer, mnist.config.model.init_args.optimizer
    assert muon.class_path == "networks.MuonAdamW" and adamw.class_path == block["class_path"] == "torch.optim.AdamW"
    for key, value in block["init_args"].items():
        assert muon.init_args[key] == adamw.init_args[key] == value
    assert fashion.trainer.default_root_dir == "runs/ddpm_fashion_mnist_cpu"
