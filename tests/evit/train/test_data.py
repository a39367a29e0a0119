from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from evit.train.data import (
    BadImageCounter,
    DataError,
    DecodedImages,
    ImageDataset,
    collate,
    eval_transform,
    resolve_data,
    train_transform,
)
from evit.train.synthetic import class_names, write_synthetic


def test_synthetic_is_deterministic_and_laid_out_as_imagefolder(tmp_path):
    a = write_synthetic(tmp_path / "a", num_classes=3, per_class=4, size=32, seed=7)
    write_synthetic(tmp_path / "b", num_classes=3, per_class=4, size=32, seed=7)
    write_synthetic(tmp_path / "c", num_classes=3, per_class=4, size=32, seed=8)
    assert a == {"train": 12, "val": 3}
    names = class_names(3)
    assert sorted(p.name for p in (tmp_path / "a" / "train").iterdir()) == sorted(names)
    first = names[0]
    same = (tmp_path / "a/train" / first / "00000.png").read_bytes()
    assert same == (tmp_path / "b/train" / first / "00000.png").read_bytes()
    assert same != (tmp_path / "c/train" / first / "00000.png").read_bytes()
    image = Image.open(tmp_path / "a/val" / first / "00000.png")
    assert image.size == (32, 32) and image.mode == "RGB"
    assert not list(tmp_path.glob(".*partial*"))


def test_synthetic_classes_do_not_depend_on_the_seed_and_colour_is_not_the_class(tmp_path):
    write_synthetic(tmp_path / "d", num_classes=2, per_class=12, size=32, seed=3)
    means = [
        np.asarray(Image.open(p), np.float32).mean((0, 1))
        for p in sorted((tmp_path / "d/train").glob("*/*.png"))
    ]
    per_class = np.array(means).reshape(2, 12, 3)
    # mean colour varies far more within a class than between the two classes
    within = per_class.std(axis=1).mean()
    between = np.abs(per_class.mean(axis=1)[0] - per_class.mean(axis=1)[1]).mean()
    assert within > 2 * between
    assert class_names(5)[:2] == class_names(2)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"num_classes": 41}, "between 2 and 40"), ({"per_class": 0}, "need >= 1")],
)
def test_synthetic_bad_input(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_synthetic(tmp_path / "x", **{"num_classes": 3, "per_class": 2, **kwargs})
    assert not (tmp_path / "x").exists()


def test_synthetic_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        write_synthetic(tmp_path / "x", num_classes=2, per_class=2)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_train_and_val_folders(shapes):
    split = resolve_data(shapes)
    assert split.classes == sorted(class_names(4))
    assert len(split.train) == 4 * 32 and len(split.val) == 4 * 8
    assert split.description == {"train": str(shapes / "train"), "val": str(shapes / "val")}


def test_one_folder_is_split_deterministically_per_class(shapes):
    a = resolve_data(shapes / "train", val_fraction=0.25, seed=1)
    b = resolve_data(shapes / "train", val_fraction=0.25, seed=1)
    c = resolve_data(shapes / "train", val_fraction=0.25, seed=2)
    assert a.val == b.val and a.val != c.val
    assert len(a.val) == 4 * 8 and len(a.train) == 4 * 24
    assert not {p for p, _ in a.val} & {p for p, _ in a.train}
    assert sorted({label for _, label in a.val}) == [0, 1, 2, 3]
    assert len(a.description["val_files"]) == len(a.val)  # the split is recorded


def test_empty_or_missing_class_folder_is_a_one_line_error(shapes, tmp_path):
    with pytest.raises(DataError, match="not found"):
        resolve_data(tmp_path / "nothing")
    root = tmp_path / "copy"
    shutil.copytree(shapes, root)
    empty = sorted((root / "train").iterdir())[1]
    shutil.rmtree(empty)
    empty.mkdir()
    with pytest.raises(DataError, match=f"{empty.name}: class folder holds no images"):
        resolve_data(root)
    shutil.rmtree(empty)
    with pytest.raises(DataError, match=r"validation classes differ.*missing: -; extra: "):
        resolve_data(root)


def test_unreadable_images_are_skipped_counted_and_limited(shapes, tmp_path):
    split = resolve_data(shapes)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    samples = [split.train[0], (str(broken), 1), (str(empty), 2), split.train[1]]
    dataset = ImageDataset(samples, eval_transform(64))
    batch = collate([dataset[i] for i in range(4)])
    assert batch.images.shape == (2, 3, 64, 64) and batch.targets.tolist() == [0, 0]
    assert [path for path, _ in batch.bad] == [str(broken), str(empty)]
    counter = BadImageCounter(limit=2)
    counter.add(batch.bad)
    counter.add(batch.bad)  # the same files again (next epoch) are not counted twice
    with pytest.raises(DataError, match="3 unreadable images, more than --max-bad-images=2"):
        counter.add([("third.png", "OSError")])


def test_eval_transform_is_the_official_resize_and_centre_crop(shapes):
    path = sorted((shapes / "val").glob("*/*.png"))[0]
    image = Image.open(path).convert("RGB")
    got = eval_transform(224)(image)
    resized = TF.resize(image, 256, interpolation=TF.InterpolationMode.BICUBIC)
    expected = TF.normalize(
        TF.to_tensor(TF.center_crop(resized, 224)), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    )
    assert torch.equal(got, expected)


def test_augmentation_depends_on_seed_epoch_and_index_only(shapes):
    samples = resolve_data(shapes).train[:3]
    dataset = ImageDataset(samples, train_transform(64, "paper", "rand-m9-mstd0.5-inc1", 0.25))
    first = dataset[2][0]
    torch.manual_seed(123)  # global state does not leak in
    assert torch.equal(dataset[2][0], first)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2][0], first)
    with pytest.raises(ValueError, match="choose one of paper, mild, none"):
        train_transform(64, "heavy", "", 0.0)


def test_kept_decoded_images_give_the_same_pixels_and_stay_bounded(shapes, tmp_path):
    """A dataset reading kept images yields exactly what decoding each time yields (augmented
    too); a file rewritten on disk is decoded again; past the byte bound nothing more is
    kept; an unreadable file is still skipped, not kept."""
    samples = resolve_data(shapes).train[:6]
    kept = DecodedImages(max_bytes=1 << 20)
    for transform in (eval_transform(64), train_transform(64, "mild", "", 0.0)):
        plain = ImageDataset(samples, transform, seed=3)
        cached = ImageDataset(samples, transform, seed=3, images=kept)
        for epoch in (0, 1):
            plain.set_epoch(epoch)
            cached.set_epoch(epoch)
            for i in range(len(samples)):
                assert torch.equal(plain[i][0], cached[i][0])
    assert len(kept) == 6 and kept.nbytes == 6 * 64 * 64 * 4  # Pillow: 4 bytes a pixel

    path = tmp_path / "changing.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    assert kept.load(path).getpixel((0, 0)) == (255, 0, 0)
    Image.new("RGB", (16, 16), (0, 0, 255)).save(path)
    os.utime(path, ns=(1, 1))  # another modification time, whatever the clock's resolution
    assert kept.load(path).getpixel((0, 0)) == (0, 0, 255)
    assert kept.nbytes == 6 * 64 * 64 * 4 + 16 * 16 * 4

    small = DecodedImages(max_bytes=64 * 64 * 4 * 2)
    for path, _ in samples:
        small.load(path)
    assert len(small) == 2 and small.nbytes <= small.max_bytes

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    dataset = ImageDataset([(str(broken), 0)], eval_transform(64), images=small)
    assert dataset[0][0] is None and len(small) == 2
