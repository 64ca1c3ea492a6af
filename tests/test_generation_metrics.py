"""FID / KID / IS / precision-recall maths, feature extractors and the reference-feature cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from metrics import ClassifierFeatures, ExtractorWeightsError, InceptionV3Features, ModuleFeatures, reference_features
from metrics.generation import (
    GenerationMetrics,
    ReferenceFeatures,
    frechet_distance,
    inception_score,
    kid_subsets,
    kid_unbiased,
    mean_cov,
    precision_recall,
)


def gaussian_features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ a + shift


class Identity(nn.Module):
    """A "feature network" that returns its input, so metrics can be fed features directly."""

    num_features = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def closed_form_fid(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_of_a_set_against_itself_is_zero():
    f = gaussian_features(500, 16, 0)
    assert abs(float(frechet_distance(*mean_cov(f), *mean_cov(f)))) < 1e-6
    metric = GenerationMetrics(ModuleFeatures(nn.Flatten()), ReferenceFeatures(f, None), ["fid"])
    metric.update_features(f)
    assert abs(metric.compute()["fid"]) < 1e-6


def test_fid_matches_the_gaussian_closed_form():
    x, y = gaussian_features(2000, 12, 1), gaussian_features(1500, 12, 2, shift=0.3)
    (mu1, s1), (mu2, s2) = mean_cov(x), mean_cov(y)
    expected = closed_form_fid(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
    assert float(frechet_distance(mu1, s1, mu2, s2)) == pytest.approx(expected, rel=1e-3)
    # The sample statistics themselves: against numpy's unbiased covariance.
    np.testing.assert_allclose(s1.numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-10, atol=1e-12)
    # And the whole metric path (states, gather, compute) gives the same number.
    metric = GenerationMetrics(ModuleFeatures(nn.Flatten()), ReferenceFeatures(x, None), ["fid"])
    for chunk in y.split(400):
        metric.update_features(chunk)
    assert metric.compute()["fid"] == pytest.approx(expected, rel=1e-3)


def test_fid_and_kid_agree_with_torchmetrics_classes():
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    x, y = gaussian_features(300, 8, 3).float(), gaussian_features(300, 8, 4, shift=0.2).float()
    fid = FrechetInceptionDistance(feature=Identity())
    fid.update(x, real=True)
    fid.update(y, real=False)
    assert float(frechet_distance(*mean_cov(x), *mean_cov(y))) == pytest.approx(float(fid.compute()), rel=1e-4)
    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=300)
    kid.update(x, real=True)
    kid.update(y, real=False)
    assert float(kid_unbiased(x, y)) == pytest.approx(float(kid.compute()[0]), rel=1e-4)


def numpy_kid(x: np.ndarray, y: np.ndarray, degree: int = 3) -> float:
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1.0) ** degree

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kid_equals_direct_numpy_and_can_be_negative():
    x, y = gaussian_features(20, 5, 5), gaussian_features(13, 5, 6, shift=0.5)  # m ≠ n
    assert float(kid_unbiased(x, y)) == pytest.approx(numpy_kid(x.numpy(), y.numpy()), rel=1e-9)
    # Two sets from one distribution: the unbiased estimate straddles 0; against itself it is < 0
    # because the cross term keeps the diagonal k(x_i, x_i) that the within-set terms drop.
    assert float(kid_unbiased(x, x)) < 0
    assert numpy_kid(x.numpy(), x.numpy()) < 0
    pool = gaussian_features(800, 5, 7)  # one distribution, two disjoint halves
    same = kid_subsets(pool[:400], pool[400:], subsets=50, subset_size=40)
    assert (same < 0).any() and (same > 0).any()


def test_kid_subsets_are_seeded():
    x, y = gaussian_features(100, 4, 9), gaussian_features(100, 4, 10, shift=1.0)
    a, b = kid_subsets(x, y, 5, 30, seed=1), kid_subsets(x, y, 5, 30, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, kid_subsets(x, y, 5, 30, seed=2))


def test_inception_score_closed_forms_and_torchmetrics():
    from torchmetrics.image.inception import InceptionScore

    uniform = torch.zeros(100, 10)
    assert float(inception_score(uniform, splits=1)[0]) == pytest.approx(1.0)
    confident = torch.full((100, 10), -1e4)
    confident[torch.arange(100), torch.arange(100) % 10] = 0  # each class equally often, p(y|x) one-hot
    assert float(inception_score(confident, splits=1)[0]) == pytest.approx(10.0, rel=1e-6)
    logits = gaussian_features(200, 10, 11).float() * 3
    ref = InceptionScore(feature=Identity(), splits=1)
    ref.update(logits)
    assert float(inception_score(logits, splits=1)[0]) == pytest.approx(float(ref.compute()[0]), rel=1e-5)


def test_precision_recall_extremes():
    x = gaussian_features(200, 6, 12)
    p, r = precision_recall(x, x.clone())
    assert float(p) == 1.0 and float(r) == 1.0
    p, r = precision_recall(x, x + 100.0)
    assert float(p) == 0.0 and float(r) == 0.0
    # Generated samples collapsed onto a few real points: precise but no recall.
    p, r = precision_recall(x, x[:5].repeat(40, 1))
    assert float(p) == 1.0 and float(r) < 0.2


def test_metric_rejects_unknown_names_and_is_without_logits():
    f = gaussian_features(10, 4, 0)
    with pytest.raises(ValueError, match="Unknown metrics"):
        GenerationMetrics(ModuleFeatures(nn.Flatten()), ReferenceFeatures(f, None), ["fid", "sfid"])
    with pytest.raises(ValueError, match="needs class logits"):
        GenerationMetrics(ModuleFeatures(nn.Flatten()), ReferenceFeatures(f, None), ["is"])


# ---- reference-feature cache ------------------------------------------------------------------------

class TinyConvFeatures(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_reference_cache_gives_identical_statistics_and_is_keyed_by_extractor(tmp_path):
    images = torch.randint(0, 256, (50, 1, 12, 12), dtype=torch.uint8)
    ex = ModuleFeatures(TinyConvFeatures(0))
    first, path = reference_features(ex, images, tmp_path, {"dataset": "toy", "split": "test"})
    second, path2 = reference_features(ex, images, tmp_path, {"dataset": "toy", "split": "test"})
    assert path == path2 and path.is_file()
    assert not first.info["cache_hit"] and second.info["cache_hit"]
    assert torch.equal(first.features, second.features)
    assert torch.equal(mean_cov(first.features)[1], mean_cov(second.features)[1])
    # Other weights or other images → another cache entry, never the stale one.
    _, other = reference_features(ModuleFeatures(TinyConvFeatures(1)), images, tmp_path, {"dataset": "toy", "split": "test"})
    _, fewer = reference_features(ex, images[:40], tmp_path, {"dataset": "toy", "split": "test"})
    assert len({path, other, fewer}) == 3
    # A corrupt cache file is recomputed, not trusted.
    path.write_bytes(b"not a torch file")
    third, _ = reference_features(ex, images, tmp_path, {"dataset": "toy", "split": "test"})
    assert not third.info["cache_hit"] and torch.equal(third.features, first.features)


# ---- extractors --------------------------------------------------------------------------------------

def test_inception_extractor_loads_a_local_file_and_handles_grey_input(random_inception_weights):
    from metrics.provenance import sha256_of

    ex = InceptionV3Features(weights_path=str(random_inception_weights))
    features, logits = ex(torch.rand(3, 1, 28, 28))
    assert features.shape == (3, 2048) and logits.shape == (3, 1008)
    assert torch.isfinite(features).all()
    d = ex.describe()
    assert d["weights_sha256"] == sha256_of(random_inception_weights)
    assert "tf1x-bilinear" in d["resize"] and "replicated" in d["channel_mapping"]
    # Grey images and the same images replicated to RGB give the same features.
    grey = torch.rand(2, 1, 20, 20)
    assert torch.allclose(ex(grey)[0], ex(grey.repeat(1, 3, 1, 1))[0])


def test_inception_extractor_errors_name_both_options(tmp_path, monkeypatch):
    with pytest.raises(ExtractorWeightsError, match="does not exist"):
        InceptionV3Features(weights_path=str(tmp_path / "missing.pth"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ExtractorWeightsError) as err:
        InceptionV3Features()
    message = str(err.value)
    assert "weights_path" in message and "network access" in message and "Network is unreachable" in message


def test_classifier_extractor_errors(tmp_path):
    with pytest.raises(ExtractorWeightsError, match="features_fashion_mnist.yaml"):
        ClassifierFeatures(str(tmp_path / "none.ckpt"))
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ExtractorWeightsError, match="not a FeatureClassifierModule checkpoint"):
        ClassifierFeatures(str(bad))


def test_module_features_fingerprint_follows_weights():
    a, b = ModuleFeatures(TinyConvFeatures(0)), ModuleFeatures(TinyConvFeatures(1))
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == ModuleFeatures(TinyConvFeatures(0)).fingerprint()
    assert a.name.endswith("TinyConvFeatures")


# ---- DDP: the same samples give the same values on 1 and 2 processes ------------------------------------

ALL = ["fid", "kid", "is", "precision_recall"]


def _ddp_worker(rank: int, world: int, port: int, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, out: str):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    metric = GenerationMetrics(ModuleFeatures(nn.Flatten()), ReferenceFeatures(x, logits), ALL,
                               kid_subsets=10, kid_subset_size=50, is_splits=1)
    mine = torch.arange(rank, len(y), world)
    for idx in mine.split(7):  # uneven batches and uneven shares across ranks
        metric.update_features(y[idx], logits[idx], idx)
    values = metric.compute()
    if rank == 0:
        torch.save(values, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.ddp
def test_metric_values_agree_between_one_and_two_processes(tmp_path):
    import socket

    import torch.multiprocessing as mp

    x, y = gaussian_features(120, 6, 13), gaussian_features(101, 6, 14, shift=0.4)
    logits = gaussian_features(120, 5, 15)[:101]
    # rank r holds samples r, r+2, ...: the gathered order differs from 0..100 unless sorted by index
    single = GenerationMetrics(ModuleFeatures(nn.Flatten()), ReferenceFeatures(x, logits), ALL,
                               kid_subsets=10, kid_subset_size=50, is_splits=1)
    single.update_features(y, logits, torch.arange(len(y)))
    expected = single.compute()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(2, port, x, y, logits, str(out)), nprocs=2, join=True)
    got = torch.load(out)
    assert got["num_generated"] == 101
    for key in ("fid", "kid", "kid_std", "inception_score", "precision", "recall"):  # samples re-ordered by index
        assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


def test_speckle_counts_isolated_pixels_and_background_haze_exactly():
    from metrics.speckle import speckle_stats

    x = torch.zeros(2, 1, 20, 20)
    x[0, 0, 8:12, 8:12] = 1.0           # a 4x4 object: no pixel of it is isolated
    x[0, 0, 0, 0] = 0.8                 # two isolated salt pixels, far from the object
    x[0, 0, 17, 3] = 0.6
    x[1, 0, 5, 5] = 0.3                 # one more; its neighbour at (5, 7) is two pixels away
    x[1, 0, 5, 7] = 0.3
    stats = speckle_stats(x)
    assert stats["isolated_rate"] == pytest.approx(4 / 800 * 1000)
    # Image 0: background is everything farther than 3 px from the object (400 - 10x10 = 300 px), 2 bright.
    # Image 1 has no object: all 400 px are background, 2 bright.
    assert stats["haze"] == pytest.approx(4 / 700)

    clean = torch.zeros(3, 1, 28, 28)
    clean[:, :, 10:18, 12:16] = torch.rand(3, 1, 8, 4) * 0.5 + 0.5
    assert speckle_stats(clean) == {"isolated_rate": 0.0, "haze": 0.0}
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        speckle_stats(clean * 2 - 1)


def test_hardware_records_the_simd_path_that_decides_cpu_numerics():
    """Weights trained under ATen's AVX2 and default kernels differ bit for bit, so a result says which ran, and
    which kernel caps the environment set."""
    import subprocess
    import sys

    from conftest import ROOT

    code = ("from metrics.provenance import hardware; h = hardware(); "
            "print(h['cpu_capability'], h['numerics_env'].get('ONEDNN_MAX_CPU_ISA'), h['numerics_env'].get('DNNL_MAX_CPU_ISA'))")
    env = {k: v for k, v in os.environ.items() if k != "DNNL_MAX_CPU_ISA"}
    forced = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**env, "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.split() == ["DEFAULT", "AVX2", "None"], "the oneDNN cap is recorded only when it is set"
    from metrics.provenance import hardware

    assert hardware()["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
