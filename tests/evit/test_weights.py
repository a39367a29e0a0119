from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import evit
from evit.weights import load_state_dict_file, save_checkpoint
from tests.conftest import VARIANTS, max_rel_error, randomize, tiny_config

_STEM = {"conv1": "0", "conv2": "2", "conv3": "4", "conv4": "6"}
_DOWN = {"res1": 0, "patchmerge": 1, "res2": 2}


def to_official_key(key: str) -> str:
    """This model's key -> microsoft/Cream key, written from the documented mapping."""
    key = key.replace(".branch.", ".m.").replace(".conv.", ".c.")
    key = re.sub(r"^head\.linear\.", "head.l.", key)
    key = re.sub(r"^patch_embed\.(conv\d)\.conv\.", lambda m: f"patch_embed.{_STEM[m[1]]}.c.", key)
    key = re.sub(r"^patch_embed\.(conv\d)\.", lambda m: f"patch_embed.{_STEM[m[1]]}.", key)
    m = re.match(r"stages\.(\d+)\.downsample\.(res1|patchmerge|res2)\.(.*)", key)
    if m:
        return f"blocks{int(m[1]) + 1}.{_DOWN[m[2]]}.{m[3]}"
    m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", key)
    if m:
        stage, index = int(m[1]), int(m[2])
        return f"blocks{stage + 1}.{index + (3 if stage else 0)}.{m[3]}"
    return key


def official_state_dict(model: evit.EfficientViT) -> dict[str, torch.Tensor]:
    sd = {to_official_key(k): v.clone() for k, v in model.state_dict().items()}
    for name, buf in model.named_buffers():
        if name.endswith("attention_bias_idxs"):
            sd[to_official_key(name)] = buf.clone()
    # official loader rule: some releases store 1x1 conv weights as 2-D
    for k, v in list(sd.items()):
        if k.endswith("qkvs.0.c.weight"):
            sd[k] = v[:, :, 0, 0]
    return sd


@pytest.mark.parametrize("name", VARIANTS)
def test_official_format_parity(name, tmp_path):
    source = randomize(evit.create_model(name), seed=3).eval()
    sd = official_state_dict(source)
    assert any(k.startswith("blocks2.1.conv1.c.") for k in sd)  # patch merging, official name
    path = tmp_path / f"{name}.pth"
    torch.save({"model": sd, "epoch": 299}, path)
    loaded = evit.create_model(name, weights=path).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_rel_error(loaded(x), source(x)) <= 1e-6


def test_official_ema_and_distillation_head(tmp_path, tiny_model):
    sd = official_state_dict(tiny_model)
    dist = randomize(evit.create_model(tiny_config()), seed=9).eval()
    for k, v in official_state_dict(dist).items():
        if k.startswith("head."):
            sd[k.replace("head.", "head_dist.", 1)] = v
    path = tmp_path / "ema.pth"
    torch.save({"model_ema": sd, "optimizer": {}}, path)
    loaded = evit.create_model(tiny_config(), weights=path, ema=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = tiny_model.forward_features(x).mean((2, 3))
        expected = (tiny_model.head(features) + dist.head(features)) / 2
        assert max_rel_error(loaded(x), expected) <= 1e-5
    with pytest.raises(ValueError, match="no 'model_ema'"):
        torch.save({"model": sd}, tmp_path / "plain.pth")
        load_state_dict_file(tmp_path / "plain.pth", ema=True)


def test_own_checkpoint_carries_its_config(tmp_path, tiny_model):
    path = save_checkpoint(tiny_model, tmp_path / "tiny.pth")
    loaded = evit.create_model(path).eval()
    assert loaded.config == tiny_model.config
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny_model(x))


def test_wrong_variant_lists_expected_vs_found(tmp_path):
    path = tmp_path / "m1.pth"
    torch.save(evit.create_model("m1").state_dict(), path)
    with pytest.raises(ValueError) as info:
        evit.create_model("m0", weights=path)
    message = str(info.value)
    assert "does not fit efficientvit_m0" in message
    assert (
        "shape mismatch(es): patch_embed.conv1.conv.weight: file (16, 3, 3, 3) vs model "
        "(8, 3, 3, 3)" in message
    )
    assert "\n" not in message


def test_num_classes_mismatch_and_reset_head(tmp_path, tiny_model):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(
        ValueError,
        match=r"head\.linear\.weight: file \(10, 24\) vs model "
        r"\(5, 24\).*reset_head=True",
    ):
        evit.create_model(tiny_config(), num_classes=5, weights=path)
    model = evit.create_model(tiny_config(), num_classes=5, weights=path, reset_head=True)
    assert model.config.num_classes == 5
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert torch.equal(
        model.patch_embed.conv1.conv.weight, tiny_model.patch_embed.conv1.conv.weight
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", r"cannot read checkpoint"),
        (b"not a zip or pickle at all", r"cannot read checkpoint"),
        (None, r"not a state dict"),
    ],
)
def test_corrupt_files(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"hello": "world"}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        evit.create_model("m0", weights=path)
    assert "\n" not in str(info.value)


def test_truncated_file(tmp_path, tiny_model):
    path = tmp_path / "cut.pth"
    torch.save(tiny_model.state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        evit.create_model(tiny_config(), weights=path)


def test_missing_file_and_configless_checkpoint(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="checkpoint not found"):
        evit.create_model("m0", weights=tmp_path / "none.pth")
    path = tmp_path / "plain.pth"
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(ValueError, match="carries no config"):
        evit.create_model(path)


def official_layout(variant: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the official model's state_dict(), kept as data (see the file)."""
    path = Path(__file__).parent / "data" / "official_state_dicts.txt"
    layout = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        name, key, shape = ([*line.split(" "), ""])[:3]
        if name == variant:
            layout[key] = tuple(int(d) for d in shape.split(",") if d)
    return layout


@pytest.mark.parametrize("name", ["efficientvit_m0", "efficientvit_m4"])
def test_official_key_list_and_shapes_load_one_to_one(name, tmp_path):
    """Every official tensor lands on exactly one of ours, with its values, and none is missed."""
    layout = official_layout(name)
    assert len(layout) == 699  # written out from the official model
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in layout.items():
        if key.endswith("attention_bias_idxs"):
            sd[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(0)
        else:
            sd[key] = torch.randn(shape, generator=gen)
    path = tmp_path / "official.pth"
    torch.save({"model": sd}, path)
    model = evit.create_model(name, weights=path)  # strict: nothing missing or left over
    ours = model.state_dict()
    values = {round(v.float().sum().item(), 3) for k, v in sd.items() if v.is_floating_point()}
    loaded = {round(v.float().sum().item(), 3) for k, v in ours.items() if v.is_floating_point()}
    assert loaded == values  # every tensor's values arrived, none invented
    assert len(ours) == len(layout) - sum(k.endswith("attention_bias_idxs") for k in layout)
