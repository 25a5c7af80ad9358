"""attnzoo.load_checkpoint / convert_checkpoint / sha256_file: safe reading, verified hashes, keys named in errors."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from zoo_helpers import SMALL_MODEL, card_fields, write_card

import attnzoo
from attnzoo.weights import CheckpointError, checkpoint_filter_fn_for, unwrap_state_dict


class RunsCodeWhenUnpickled:
    """Unpickling this calls open(marker, 'w'): harmless, but proof that code ran if the marker appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (io.open, (self.marker, "w"))


@dataclass
class TrainingConfig:
    """A class a training script might pickle next to the weights (needs code to rebuild, though harmless)."""

    lr: float = 0.1


def fresh_model(seed: int = 1, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model(SMALL_MODEL, **kwargs).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------- refusing code


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_that_runs_code_is_refused_and_not_executed(tmp_path, small_model, zip_format):
    marker = tmp_path / "code_ran.txt"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small_model.state_dict(), "payload": RunsCodeWhenUnpickled(marker)}, path,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError) as info:
        attnzoo.load_checkpoint(fresh_model(), path)
    assert not marker.exists(), "the pickle's code was executed"
    message = str(info.value)
    assert "refused" in message and "nothing in it was executed" in message and "zoo convert" in message
    if zip_format:  # the zip format lets torch list what the pickle needs without unpickling it
        assert "io.open" in message or "_io.open" in message


def test_trusted_pickle_converts_only_with_explicit_trust(tmp_path, small_model):
    path = tmp_path / "train.pth"
    torch.save({"model": small_model.state_dict(), "config": TrainingConfig(), "epoch": 300}, path)
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        attnzoo.convert_checkpoint(path, tmp_path / "w.safetensors")
    sha = attnzoo.convert_checkpoint(path, tmp_path / "w.safetensors", trust_pickle=True)
    model = fresh_model(seed=2)
    attnzoo.load_checkpoint(model, tmp_path / "w.safetensors", expected_sha256=sha)
    assert same_weights(model, small_model)


def test_namespace_args_are_data_and_load(tmp_path, small_model):
    import argparse

    path = tmp_path / "with_args.pth"
    torch.save({"model": small_model.state_dict(), "args": argparse.Namespace(lr=0.1, model=SMALL_MODEL)}, path)
    model = fresh_model(seed=2)
    attnzoo.load_checkpoint(model, path)
    assert same_weights(model, small_model)


# ---------------------------------------------------------------------------------------------- file integrity


def test_sha256_mismatch_is_refused_with_both_hashes(tmp_path, small_model):
    path = tmp_path / "w.safetensors"
    save_file(small_model.state_dict(), path)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    assert attnzoo.sha256_file(path) == actual
    wrong = "0" * 64
    with pytest.raises(CheckpointError) as info:
        attnzoo.load_checkpoint(fresh_model(), path, expected_sha256=wrong)
    assert wrong in str(info.value) and actual in str(info.value) and "sha256 mismatch" in str(info.value)
    attnzoo.load_checkpoint(fresh_model(), path, expected_sha256=actual[:10])  # a hash prefix (torch hub style) is fine


def test_truncated_safetensors_gives_a_clear_error(tmp_path, small_model):
    path = tmp_path / "w.safetensors"
    save_file(small_model.state_dict(), path)
    data = path.read_bytes()
    for size in (len(data) - 100, 200, 5):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=r"truncated .*safetensors"):
            attnzoo.load_checkpoint(fresh_model(), path)


def test_corrupt_files_give_clear_errors(tmp_path, small_model):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes((16).to_bytes(8, "little") + b"{not json at all" + b"\0" * 64)
    with pytest.raises(CheckpointError, match="corrupt .safetensors"):
        attnzoo.load_checkpoint(fresh_model(), garbage)
    pth = tmp_path / "w.pth"
    torch.save(small_model.state_dict(), pth)
    pth.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        attnzoo.load_checkpoint(fresh_model(), pth)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        attnzoo.load_checkpoint(fresh_model(), tmp_path / "absent.pth")
    odd = tmp_path / "w.npz"
    odd.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        attnzoo.load_checkpoint(fresh_model(), odd)


# ---------------------------------------------------------------------------------------------- containers and keys


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "state_dict_ema", "nested", "module_prefix"])
def test_containers_are_unwrapped(tmp_path, small_model, wrap):
    sd = small_model.state_dict()
    containers = {
        "plain": sd,
        "model": {"model": sd, "optimizer": {"lr": 0.1}, "epoch": 3},
        "state_dict": {"state_dict": sd, "epoch": 3},
        "state_dict_ema": {"state_dict_ema": sd},
        "nested": {"checkpoint": 1, "state_dict": {"model": sd}},
        "module_prefix": {"model": {f"module.{k}": v for k, v in sd.items()}},
    }
    path = tmp_path / "w.pth"
    torch.save(containers[wrap], path)
    model = fresh_model(seed=2)
    assert not same_weights(model, small_model)
    result = attnzoo.load_checkpoint(model, path)
    assert same_weights(model, small_model) and result.fits


def test_use_ema_takes_the_ema_weights(small_model):
    sd = small_model.state_dict()
    ema = {k: v + 1 for k, v in sd.items()}
    checkpoint = {"state_dict": sd, "state_dict_ema": ema}
    assert torch.equal(next(iter(unwrap_state_dict(checkpoint).values())), next(iter(sd.values())))
    assert torch.equal(next(iter(unwrap_state_dict(checkpoint, use_ema=True).values())), next(iter(ema.values())))
    with pytest.raises(CheckpointError, match="no EMA weights"):
        unwrap_state_dict({"state_dict": sd}, use_ema=True)


def test_missing_and_unexpected_keys_are_named(tmp_path, small_model):
    sd = dict(small_model.state_dict())
    dropped = "head.fc.weight"
    del sd[dropped]
    sd["head.extra.weight"] = torch.zeros(3)
    path = tmp_path / "w.safetensors"
    save_file(sd, path)
    with pytest.raises(CheckpointError) as info:
        attnzoo.load_checkpoint(fresh_model(), path)
    message = str(info.value)
    assert f"1 missing key(s): {dropped}" in message and "1 unexpected key(s): head.extra.weight" in message
    assert "strict=False" in message

    model = fresh_model(seed=2)
    with pytest.warns(UserWarning, match=dropped):
        result = attnzoo.load_checkpoint(model, path, strict=False)
    assert result.missing_keys == [dropped] and result.unexpected_keys == ["head.extra.weight"]
    assert torch.equal(model.state_dict()["stem.0.weight"], small_model.state_dict()["stem.0.weight"])


def test_checkpoint_of_another_variant_lists_shape_mismatches(tmp_path):
    other = fresh_model(num_classes=10)
    path = tmp_path / "w.safetensors"
    save_file(other.state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        attnzoo.load_checkpoint(fresh_model(), path)
    message = str(info.value)
    width = other.num_features
    assert f"head.fc.weight checkpoint [10, {width}] vs model [1000, {width}]" in message
    assert "another variant" in message
    model = fresh_model(seed=2)
    with pytest.warns(UserWarning):
        result = attnzoo.load_checkpoint(model, path, strict=False)
    assert [k for k, _, _ in result.mismatched_shapes] == ["head.fc.weight", "head.fc.bias"]
    assert torch.equal(model.state_dict()["stem.0.weight"], other.state_dict()["stem.0.weight"])


def test_family_filter_runs_and_can_be_replaced(tmp_path, small_model):
    calls = []

    def rename_back(state_dict, model):
        calls.append(model)
        return {k.replace("legacy_stem", "stem"): v for k, v in state_dict.items()}

    path = tmp_path / "w.safetensors"
    save_file({k.replace("stem", "legacy_stem"): v for k, v in small_model.state_dict().items()}, path)
    model = fresh_model(seed=2)
    attnzoo.load_checkpoint(model, path, filter_fn=rename_back)
    assert calls == [model] and same_weights(model, small_model)
    from timm.models import convnext

    assert checkpoint_filter_fn_for(model) is convnext.checkpoint_filter_fn


# ---------------------------------------------------------------------------------------------- cards and the cache


def test_card_checkpoint_is_fetched_from_a_file_url_and_verified(tmp_path, card_dir, hub_cache, small_model):
    source = tmp_path / "published" / "test_convnext_in1k.safetensors"
    source.parent.mkdir()
    save_file(small_model.state_dict(), source)
    sha = attnzoo.sha256_file(source)
    write_card(card_dir, card_fields(checkpoints=[{"url": source.as_uri(), "sha256": sha, "note": "test"}]))
    model = fresh_model(seed=2)
    result = attnzoo.load_checkpoint(model, SMALL_MODEL)
    assert same_weights(model, small_model) and result.sha256 == sha
    assert result.path == hub_cache / source.name and result.path.is_file()  # now cached

    source.unlink()  # the cached copy is used, nothing is fetched again
    attnzoo.load_checkpoint(fresh_model(seed=3), SMALL_MODEL)
    # attnzoo.create_model(name, pretrained=True) goes through the same verified path
    assert same_weights(attnzoo.create_model(SMALL_MODEL, pretrained=True), small_model)


def test_prefilled_cache_is_used_and_a_wrong_card_hash_refused(card_dir, hub_cache, small_model):
    hub_cache.mkdir(parents=True)
    save_file(small_model.state_dict(), hub_cache / "w-1234abcd.safetensors")
    url = "https://weights.invalid/releases/w-1234abcd.safetensors"  # never contacted: the file is cached
    write_card(card_dir, card_fields(checkpoints=[{"url": url, "sha256": "f" * 64, "note": "test"}]))
    with pytest.raises(CheckpointError, match=f"sha256 mismatch: expected {'f' * 64} \\(model card '{SMALL_MODEL}'\\)"):
        attnzoo.load_checkpoint(fresh_model(), SMALL_MODEL)
    write_card(card_dir, card_fields(checkpoints=[{"url": url, "sha256": None, "note": "test"}]))
    model = fresh_model(seed=2)
    attnzoo.load_checkpoint(model, SMALL_MODEL)
    assert same_weights(model, small_model)


def test_unreachable_url_says_where_to_put_the_file(tmp_path, card_dir, hub_cache):
    url = (tmp_path / "nowhere" / "w.safetensors").as_uri()
    write_card(card_dir, card_fields(checkpoints=[{"url": url, "sha256": None, "note": "test"}]))
    with pytest.raises(CheckpointError, match=f"could not download .* put the file at {hub_cache / 'w.safetensors'}"):
        attnzoo.load_checkpoint(fresh_model(), SMALL_MODEL)
    with pytest.raises(CheckpointError, match="no such checkpoint file, and no model card"):
        attnzoo.load_checkpoint(fresh_model(), "not_a_card_or_file")


# ---------------------------------------------------------------------------------------------- convert


def test_convert_writes_clean_safetensors_and_returns_its_sha(tmp_path, small_model):
    sd = dict(small_model.state_dict())
    sd["tied.weight"] = sd["stem.0.weight"]  # shared storage: safetensors refuses it unless cloned
    sd["strided.weight"] = sd["head.fc.weight"].t()  # not contiguous
    src = tmp_path / "src.pth"
    torch.save({"model": sd, "args": None}, src)
    dst = tmp_path / "clean.safetensors"
    sha = attnzoo.convert_checkpoint(src, dst)
    assert sha == hashlib.sha256(dst.read_bytes()).hexdigest()
    loaded = load_file(dst)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)
    header = json.loads(dst.read_bytes()[8:8 + int.from_bytes(dst.read_bytes()[:8], "little")])
    assert header["__metadata__"]["source"] == "src.pth"


def test_convert_with_model_checks_the_fit(tmp_path, small_model):
    src = tmp_path / "src.pth"
    torch.save({"state_dict": small_model.state_dict()}, src)
    dst = tmp_path / "ok.safetensors"
    attnzoo.convert_checkpoint(src, dst, model_name=SMALL_MODEL)
    model = fresh_model(seed=2)
    attnzoo.load_checkpoint(model, dst)
    assert same_weights(model, small_model)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        attnzoo.convert_checkpoint(src, tmp_path / "bad.safetensors", model_name="test_convnext2")
    with pytest.raises(CheckpointError, match=r"must end in \.safetensors"):
        attnzoo.convert_checkpoint(src, tmp_path / "bad.pth")
