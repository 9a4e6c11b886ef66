"""vqgen's digit reader (vqgen.score.digits): shipped in the package, reads digits, says where it applies."""

import pytest
import torch

from vqgen import data as D
from vqgen import score
from vqgen.errors import UsageError
from vqgen.score import digits


def test_the_shipped_reader_is_small_and_records_its_training():
    assert digits.WEIGHTS.is_file()
    assert 50_000 < digits.WEIGHTS.stat().st_size < 400_000
    meta = digits.metadata()
    assert float(meta["test_accuracy"]) >= 0.99
    assert {"epochs", "seed", "date"} <= meta.keys()
    assert f"{float(meta['test_accuracy']):.1%}" in score.NETWORKS["digits"]


def test_it_reads_the_tiny_synthetic_digits(mnist_idx):
    # PIL's font, not handwriting, and often off-centre: read well above chance (10%), not as MNIST (99%)
    d = D.load_images(str(mnist_idx), 28, 1, use_cache=False, workers=0)
    read = score.read_digits(d.train_images)
    assert read.dtype == torch.int64 and read.shape == (320,)
    assert (read == d.train_labels).float().mean() > 0.4
    assert len(read.unique()) == 10


def test_features_of_bytes_and_of_floats_agree(mnist_idx):
    d = D.load_images(str(mnist_idx), 28, 1, use_cache=False, workers=0)
    x = d.test_images[:20]
    f = score.digit_features(x, batch_size=8)
    assert f.shape == (20, digits.FEATURES) and f.dtype == torch.float64
    assert torch.allclose(f, score.digit_features(x.float() / 255), atol=1e-5)
    assert f.abs().sum() > 0


def test_it_refuses_images_it_cannot_read():
    with pytest.raises(UsageError, match="28, 28.*3x28x28"):
        score.read_digits(torch.rand(2, 3, 28, 28))


@pytest.mark.parametrize("size, channels, classes, reason", [
    (28, 1, [str(d) for d in range(10)], None),
    (96, 3, None, "the digit reader knows 28x28 grey digits; this dataset is 96x96 colour"),
    (32, 1, [str(d) for d in range(10)], "the digit reader knows 28x28 grey digits; this dataset is 32x32 grey"),
    (28, 1, None, "the digit reader knows the classes 0-9; this dataset has no classes"),
    (28, 1, ["shirt", "shoe", "bag", "coat", "dress"],
     "the digit reader knows the classes 0-9; this dataset's are shirt, shoe, bag, coat, ..."),
])
def test_reader_fits_only_28x28_grey_digits(size, channels, classes, reason):
    assert score.reader_fits(size, channels, classes) == reason


@pytest.mark.slow
def test_it_reads_99_percent_of_real_mnist(real_data):
    d = D.load_images(str(real_data("mnist-idx")), 28, 1)
    read = score.read_digits(d.test_images)
    assert (read == d.test_labels).float().mean() >= 0.99
