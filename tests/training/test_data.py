"""Tests for neurodeploy.training.data: the embedded mnist5k set, and CIFAR-10/100 and TinyImageNet
read through the real loaders from tiny files written here in exactly their on-disk formats."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neurodeploy.training import data as d
from neurodeploy.errors import NeurodeployError

# --------------------------------------------------------------------------- helpers


def norm(value_0_255: float, name: str, channel: int = 0) -> float:
    info = d.DATASETS[name]
    return (value_0_255 / 255.0 - info.mean[channel]) / info.std[channel]


def write_cifar_batch(path: Path, data: np.ndarray, labels: list[int], label_key: bytes = b"labels", **extra) -> None:
    """A batch as the real files hold it: a protocol-2 pickled dict with bytes keys."""
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        label_key: labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    batch.update({k.encode(): v for k, v in extra.items()})
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def cifar_image(r: int, g: int, b: int) -> np.ndarray:
    """One row of a CIFAR 'data' array: 1024 R, then 1024 G, then 1024 B values."""
    return np.concatenate([np.full(1024, v, np.uint8) for v in (r, g, b)])


@pytest.fixture()
def cifar10_dir(tmp_path: Path) -> Path:
    """cifar-10-batches-py with 2 images per train batch (labels 0..9 in order) and 3 test images."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for i in range(1, 6):
        data = np.stack([cifar_image(10 * i, 20 * i, 30 * i), cifar_image(0, 0, 0)])
        write_cifar_batch(root / f"data_batch_{i}", data, [2 * i - 2, 2 * i - 1])
    test = np.stack([cifar_image(0, 0, 0)] * 3)
    test[0, 5 * 32 + 7] = 200  # R at row 5, column 7
    test[0, 1024 + 31] = 100  # G at row 0, column 31
    test[1, 2048 + 31 * 32] = 255  # B at row 31, column 0
    write_cifar_batch(root / "test_batch", test, [3, 9, 0])
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    return tmp_path


WNIDS = ["n03", "n01", "n02"]  # deliberately not sorted: labels follow the file's order
COLOURS = {"n03": (200, 30, 40), "n01": (20, 180, 60), "n02": (90, 90, 250)}


@pytest.fixture()
def tiny_dir(tmp_path: Path) -> Path:
    root = tmp_path / "tiny-imagenet-200"
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in WNIDS))
    for w in WNIDS:
        folder = root / "train" / w / "images"
        folder.mkdir(parents=True)
        for k in range(2):
            Image.new("RGB", (64, 64), COLOURS[w]).save(folder / f"{w}_{k}.JPEG", quality=95)
        (root / "train" / w / f"{w}_boxes.txt").write_text(
            "".join(f"{w}_{k}.JPEG\t0\t0\t63\t63\n" for k in range(2))
        )
    Image.new("L", (64, 64), 77).save(root / "train" / "n01" / "images" / "n01_2.JPEG", quality=95)  # grayscale
    val = [("val_0.JPEG", "n02"), ("val_1.JPEG", "n03"), ("val_2.JPEG", "n01")]
    for fname, w in val:
        Image.new("RGB", (64, 64), COLOURS[w]).save(root / "val" / "images" / fname, quality=95)
    (root / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t1\t2\t60\t61\n" for f, w in val))
    return tmp_path


# --------------------------------------------------------------------------- registry


def test_registry():
    assert d.dataset_names() == ["mnist5k", "cifar10", "cifar100", "tinyimagenet"]
    shapes = {n: (i.num_classes, i.channels, i.image_size) for n, i in d.DATASETS.items()}
    assert shapes == {
        "mnist5k": (10, 1, 28),
        "cifar10": (10, 3, 32),
        "cifar100": (100, 3, 32),
        "tinyimagenet": (200, 3, 64),
    }
    for info in d.DATASETS.values():
        assert info.description and len(info.mean) == len(info.std) == info.channels


def test_unknown_name_and_bad_arguments():
    with pytest.raises(NeurodeployError, match="unknown dataset 'imagenet'.*mnist5k.*cifar10.*cifar100.*tinyimagenet"):
        d.load_split("imagenet", "train")
    with pytest.raises(NeurodeployError, match="unknown split 'val'"):
        d.load_tensors("mnist5k", "val")
    with pytest.raises(NeurodeployError, match="input size"):
        d.load_tensors("mnist5k", "test", input_size=0)
    with pytest.raises(NeurodeployError, match="limit"):
        d.load_tensors("mnist5k", "test", limit=-1)


# --------------------------------------------------------------------------- mnist5k


def test_mnist5k_split_sizes_disjoint_stratified_and_pinned():
    _, labels = d._read_mnist5k_file()
    idx = d.mnist5k_split_indices(labels)
    assert len(idx["train"]) == 4000 and len(idx["test"]) == 1000
    assert not set(idx["train"]) & set(idx["test"])
    assert sorted(np.concatenate([idx["train"], idx["test"]])) == list(range(5000))
    assert np.bincount(labels[idx["train"]]).tolist() == [400] * 10
    assert np.bincount(labels[idx["test"]]).tolist() == [100] * 10
    # the first rows of each split are pinned, so a change of numpy's default_rng stream shows here
    assert idx["train"][:5].tolist() == [1289, 2519, 1363, 488, 4465]
    assert idx["test"][:5].tolist() == [2156, 1134, 2195, 1727, 1906]
    # the order mixes classes: the first 100 test digits cover all 10
    assert len(set(labels[idx["test"][:100]].tolist())) == 10


def test_mnist5k_tensors_deterministic_and_normalised():
    x, y = d.load_tensors("mnist5k", "train")
    x2, y2 = d.load_tensors("mnist5k", "train")
    assert x.shape == (4000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (4000,) and y.dtype == torch.int64
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert sorted(torch.unique(y).tolist()) == list(range(10))
    # the recorded constants are the train split's mean/std
    assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1) < 1e-4
    xt, yt = d.load_tensors("mnist5k", "test", limit=50)
    assert xt.shape == (50, 1, 28, 28) and yt.shape == (50,)


def test_mnist5k_pixels_match_the_csv_file():
    _, labels = d._read_mnist5k_file()
    row = int(d.mnist5k_split_indices(labels)["test"][3])
    with gzip.open(d.mnist5k_csv_path(), "rt") as f:
        for i, line in enumerate(csv.reader(f)):
            if i == row:
                values = [int(v) for v in line]
                break
    x, y = d.load_tensors("mnist5k", "test", limit=4)
    assert y[3].item() == values[-1]  # the label is the last column
    want = (torch.tensor(values[:784], dtype=torch.float32).view(28, 28) / 255 - 0.131588) / 0.308881
    assert torch.allclose(x[3, 0], want, atol=1e-5)


def test_mnist5k_32_is_exact_background_padding():
    x28, y28 = d.load_tensors("mnist5k", "test")
    x32, y32 = d.load_tensors("mnist5k", "test", input_size=32)
    assert x32.shape == (1000, 1, 32, 32) and torch.equal(y28, y32)
    assert torch.equal(x32[:, :, 2:30, 2:30], x28)
    background = d.DATASETS["mnist5k"].zero_level[0]
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(x32[:, 0][:, border] == x32.min())  # 0 is MNIST's background: the darkest value
    assert x32.min().item() == pytest.approx(background)
    # other sizes are resized
    assert d.load_tensors("mnist5k", "test", input_size=16, limit=2)[0].shape == (2, 1, 16, 16)


def test_mnist5k_dataset_items_match_tensors():
    ds = d.load_split("mnist5k", "test", input_size=32)
    x, y = d.load_tensors("mnist5k", "test", input_size=32, limit=3)
    assert len(ds) == 1000
    for i in range(3):
        img, label = ds[i]
        assert isinstance(label, int) and label == y[i].item()
        assert img.dtype == torch.float32 and torch.equal(img, x[i])
    assert len(d.load_split("mnist5k", "train")) == 4000


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_pixels_labels_and_layout(cifar10_dir: Path):
    x, y = d.load_tensors("cifar10", "train", data_dir=cifar10_dir)
    assert x.shape == (10, 3, 32, 32) and y.tolist() == list(range(10))  # batches 1..5 in order
    for c, v in enumerate((30, 60, 90)):  # batch 3, first image: R=30, G=60, B=90 everywhere
        assert torch.allclose(x[4, c], torch.full((32, 32), norm(v, "cifar10", c)), atol=1e-6)

    xt, yt = d.load_tensors("cifar10", "test", data_dir=cifar10_dir)
    assert yt.tolist() == [3, 9, 0]
    black = torch.tensor(d.DATASETS["cifar10"].zero_level).view(3, 1, 1)
    expected = black.expand(3, 3, 32, 32).clone()
    expected[0, 0, 5, 7] = norm(200, "cifar10", 0)
    expected[0, 1, 0, 31] = norm(100, "cifar10", 1)
    expected[1, 2, 31, 0] = norm(255, "cifar10", 2)
    assert torch.allclose(xt, expected, atol=1e-6)

    ds = d.load_split("cifar10", "test", data_dir=cifar10_dir)
    img, label = ds[0]
    assert label == 3 and torch.allclose(img, expected[0], atol=1e-6)
    # resizing to another input size
    assert d.load_tensors("cifar10", "test", input_size=64, data_dir=cifar10_dir)[0].shape == (3, 3, 64, 64)


def test_cifar100_uses_fine_labels(tmp_path: Path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    train = np.stack([cifar_image(255, 0, 0), cifar_image(0, 128, 0)])
    write_cifar_batch(root / "train", train, [57, 99], label_key=b"fine_labels", coarse_labels=[1, 2])
    write_cifar_batch(root / "test", train[:1], [42], label_key=b"fine_labels", coarse_labels=[3])
    x, y = d.load_tensors("cifar100", "train", data_dir=tmp_path)
    assert y.tolist() == [57, 99]
    assert x[0, 0, 0, 0].item() == pytest.approx(norm(255, "cifar100", 0), abs=1e-6)
    assert x[1, 1, 10, 10].item() == pytest.approx(norm(128, "cifar100", 1), abs=1e-6)
    # data_dir may also be the dataset folder itself
    ds = d.load_split("cifar100", "test", data_dir=root)
    assert len(ds) == 1 and ds[0][1] == 42


def test_cifar_augmentation_is_crop_with_black_padding_and_flip(cifar10_dir: Path):
    def run(seed):
        ds = d.load_split("cifar10", "train", data_dir=cifar10_dir, augment=True, generator=torch.Generator().manual_seed(seed))
        return torch.stack([ds[i % 2][0] for i in range(40)])  # images 0 (coloured) and 1 (black)

    a, b = run(0), run(0)
    assert torch.equal(a, b)  # seeded
    assert not torch.equal(a, run(1))
    black = torch.tensor(d.DATASETS["cifar10"].zero_level).view(3, 1, 1)
    colour = torch.tensor([norm(v, "cifar10", c) for c, v in enumerate((10, 20, 30))]).view(3, 1, 1)
    for img in a[0::2]:  # every pixel is the image colour or the black padding
        is_colour = torch.isclose(img, colour.expand_as(img), atol=1e-5).all(0)
        is_black = torch.isclose(img, black.expand_as(img), atol=1e-5).all(0)
        assert torch.all(is_colour | is_black)
        assert is_colour.sum() >= 28 * 28  # at most 4 pixels cropped per side
    assert any(not torch.isclose(img, colour, atol=1e-5).all() for img in a[0::2])  # some crops shift


def test_augment_batch_is_a_padded_crop_or_its_mirror():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    flips = 0
    for _ in range(20):
        out = d.augment_batch(x, padding=2, flip=True, generator=g, fill=(-1.0, -2.0, -3.0))
        assert out.shape == x.shape
        for n in range(2):
            padded = torch.stack([torch.nn.functional.pad(x[n, c], (2, 2, 2, 2), value=-1.0 - c) for c in range(3)])
            crops = [padded[:, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
            plain = any(torch.equal(out[n], c) for c in crops)
            mirrored = any(torch.equal(out[n], c.flip(-1)) for c in crops)
            assert plain or mirrored
            flips += mirrored and not plain
    assert 0 < flips < 40
    single = d.augment_batch(x[0], padding=0, flip=False)
    assert torch.equal(single, x[0])


# --------------------------------------------------------------------------- TinyImageNet


def test_tinyimagenet_train_labels_follow_wnids_order(tiny_dir: Path):
    x, y = d.load_tensors("tinyimagenet", "train", data_dir=tiny_dir)
    assert x.shape == (7, 3, 64, 64)
    assert y.tolist() == [0, 0, 1, 1, 1, 2, 2]  # n03, n03, n01 x3 (incl. grayscale), n02, n02
    tol = 3 / 255 / min(d.DATASETS["tinyimagenet"].std)  # JPEG rounding
    for i, w in [(0, "n03"), (2, "n01"), (5, "n02")]:
        for c in range(3):
            assert torch.allclose(x[i, c], torch.full((64, 64), norm(COLOURS[w][c], "tinyimagenet", c)), atol=tol)
    gray = x[4]  # n01_2.JPEG, grayscale 77 -> RGB (77, 77, 77)
    for c in range(3):
        assert torch.allclose(gray[c], torch.full((64, 64), norm(77, "tinyimagenet", c)), atol=tol)


def test_tinyimagenet_val_is_the_test_split(tiny_dir: Path):
    ds = d.load_split("tinyimagenet", "test", data_dir=tiny_dir)
    assert len(ds) == 3 and [ds[i][1] for i in range(3)] == [2, 0, 1]  # n02, n03, n01 by wnids order
    img, _ = ds[1]
    tol = 3 / 255 / min(d.DATASETS["tinyimagenet"].std)
    assert img.shape == (3, 64, 64)
    assert img[0, 10, 10].item() == pytest.approx(norm(200, "tinyimagenet", 0), abs=tol)
    x, y = d.load_tensors("tinyimagenet", "test", input_size=32, data_dir=tiny_dir, limit=2)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [2, 0]
    aug = d.load_split("tinyimagenet", "train", 32, tiny_dir, augment=True, generator=torch.Generator().manual_seed(0))
    assert aug[0][0].shape == (3, 32, 32)


def test_tinyimagenet_bad_annotation(tiny_dir: Path):
    ann = tiny_dir / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(NeurodeployError, match="val_annotations.txt:1"):
        d.load_split("tinyimagenet", "test", data_dir=tiny_dir)


# --------------------------------------------------------------------------- missing data


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "tinyimagenet"])
def test_no_data_dir_asks_for_one(name):
    with pytest.raises(NeurodeployError, match="--data-dir") as e:
        d.load_split(name, "train")
    assert "\n" not in str(e.value)


def test_missing_files_are_named_with_where_and_how(tmp_path: Path):
    with pytest.raises(NeurodeployError) as e:
        d.load_tensors("cifar10", "train", data_dir=tmp_path)
    msg = str(e.value)
    assert "data_batch_1" in msg and "data_batch_5" in msg and str(tmp_path / "cifar-10-batches-py") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg and "\n" not in msg
    with pytest.raises(NeurodeployError, match=r"test\b.*cifar-100-python"):
        d.load_split("cifar100", "test", data_dir=tmp_path)
    with pytest.raises(NeurodeployError, match="wnids.txt.*val_annotations.txt.*tiny-imagenet-200"):
        d.load_split("tinyimagenet", "test", data_dir=tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    with pytest.raises(NeurodeployError, match="extract it"):
        d.load_split("cifar10", "test", data_dir=tmp_path)


def test_damaged_batch(cifar10_dir: Path):
    write_cifar_batch(cifar10_dir / "cifar-10-batches-py" / "test_batch", np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(NeurodeployError, match="expected"):
        d.load_split("cifar10", "test", data_dir=cifar10_dir)
    (cifar10_dir / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(NeurodeployError, match="is not a CIFAR python batch"):
        d.load_split("cifar10", "test", data_dir=cifar10_dir)


def test_download_is_opt_in(cifar10_dir: Path, tmp_path: Path, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(cifar10_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    info = dataclasses.replace(d.DATASETS["cifar10"], url=archive.as_uri())
    monkeypatch.setitem(d.DATASETS, "cifar10", info)
    target = tmp_path / "fresh"
    with pytest.raises(NeurodeployError, match="not found"):
        d.load_split("cifar10", "test", data_dir=target)  # no download unless asked
    ds = d.load_split("cifar10", "test", data_dir=target, download=True)
    assert [ds[i][1] for i in range(3)] == [3, 9, 0]
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-batches-py"]  # temp archive removed

    broken = dataclasses.replace(info, url=(tmp_path / "nowhere.tar.gz").as_uri())
    monkeypatch.setitem(d.DATASETS, "cifar10", broken)
    with pytest.raises(NeurodeployError, match="could not download"):
        d.load_split("cifar10", "test", data_dir=tmp_path / "other", download=True)


class _Hostile:
    """Unpickling this calls os.system: a CIFAR reader that trusts pickle runs it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 5])
def test_hostile_cifar_batch_runs_nothing(tmp_path: Path, protocol):
    marker = tmp_path / "pwned"
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    (root / "test_batch").write_bytes(pickle.dumps({b"data": _Hostile(marker), b"labels": [0]}, protocol=protocol))
    with pytest.raises(NeurodeployError, match=r"test_batch is not a CIFAR python batch \(it refers to "
                                               r"(posix|os)\.system"):
        d.load_tensors("cifar10", "test", data_dir=tmp_path)
    assert not marker.exists()


def test_cifar_batch_pickled_by_numpy_today_reads(tmp_path: Path):
    """Protocol 5 (numpy 2's own pickling of arrays) reads as well as the files' protocol 2."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    data = np.stack([cifar_image(1, 2, 3)] * 2)
    (root / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [4, 7]}, protocol=5))
    x, y = d.load_tensors("cifar10", "test", data_dir=tmp_path)
    assert y.tolist() == [4, 7] and x.shape == (2, 3, 32, 32)
