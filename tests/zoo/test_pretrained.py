"""``timm.create_model(name, pretrained=True)`` for the zoo's families, with timm's downloader faked (no network).

The fake serves, for each official URL, a small checkpoint in the official layout ({'model': state_dict}) filled with
a value of its own, so a model that loaded another variant's file would show it. Small configurations of the
released recipes (same key layout, few narrow blocks) keep it cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import urllib.error
from pathlib import Path

import pytest
import timm
import timm.models._hub as timm_hub
import torch

import attnzoo
import attnzoo.weights.loading
from attnzoo.backbones.pretrained import OfficialWeightsUnavailableError, install_checkpoint_loader
from attnzoo.weights import CheckpointError, cache_filename

SMALL = dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), qk_dims=(16, 32, 64, 128), head_dim=16)


def _official_url(name: str) -> tuple[str, str]:
    url, cache_name = timm.get_pretrained_cfg(name).url
    return url, cache_name


@pytest.fixture
def fake_downloads(monkeypatch, hub_cache):
    """timm's downloader replaced: ``served[url]`` is the state dict that URL delivers; ``calls`` records
    (url, cache file name) of each download. Unknown URLs fail as an offline machine does."""
    served: dict[str, dict] = {}
    calls: list[tuple[str, str]] = []

    def download_url_to_file(url, dst, hash_prefix=None, progress=True):
        if url not in served:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        calls.append((url, Path(dst).name))
        torch.save({"model": served[url]}, dst)

    monkeypatch.setattr(timm_hub, "download_url_to_file", download_url_to_file)
    return served, calls


def _filled(name: str, value: float) -> dict:
    """A small ``name`` state dict with every float tensor set to ``value`` (BatchNorm counters kept)."""
    model = timm.create_model(name, **SMALL)
    return {k: torch.full_like(v, value) if v.is_floating_point() else v for k, v in model.state_dict().items()}


def _all_equal(model: torch.nn.Module, value: float) -> bool:
    return all(bool((p == value).all()) for p in model.parameters())


def test_two_variants_download_into_two_cache_files_and_each_loads_its_own(fake_downloads, hub_cache):
    served, calls = fake_downloads
    (tiny_url, tiny_file), (small_url, small_file) = _official_url("biformer_tiny"), _official_url("biformer_small")
    assert tiny_url.endswith("/root/content") and small_url.endswith("/root/content")  # the names timm would use
    served[tiny_url], served[small_url] = _filled("biformer_tiny", 0.25), _filled("biformer_small", 0.75)

    tiny = timm.create_model("biformer_tiny", pretrained=True, **SMALL)
    small = timm.create_model("biformer_small", pretrained=True, **SMALL)  # same shapes: only the values tell

    assert _all_equal(tiny, 0.25) and _all_equal(small, 0.75)
    assert calls == [(tiny_url, "biformer_tiny.in1k.pth"), (small_url, "biformer_small.in1k.pth")]
    assert sorted(p.name for p in hub_cache.iterdir()) == sorted([tiny_file, small_file])
    again = timm.create_model("biformer_tiny", pretrained=True, **SMALL)  # cached: no second download
    assert len(calls) == 2 and _all_equal(again, 0.25)
    # zoo's card path resolves the same cache file
    assert attnzoo.load_checkpoint(timm.create_model("biformer_tiny", **SMALL), "biformer_tiny").path == \
        hub_cache / tiny_file


def test_pretrained_adapts_classes_channels_and_features_only_as_timm(fake_downloads):
    served, _ = fake_downloads
    served[_official_url("biformer_tiny")[0]] = _filled("biformer_tiny", 0.25)

    five_gray = timm.create_model("biformer_tiny", pretrained=True, num_classes=5, in_chans=1, **SMALL)
    stem = five_gray.downsample_layers[0][0].weight
    assert stem.shape[1] == 1 and bool((stem == 0.75).all())  # timm's adapt_input_conv sums the 3 RGB filters
    assert five_gray.head.weight.shape == (5, 128) and not bool((five_gray.head.weight == 0.25).all())  # a new head
    body = [p for n, p in five_gray.named_parameters() if not n.startswith(("head.", "downsample_layers.0.0."))]
    assert all(bool((p == 0.25).all()) for p in body)

    backbone = timm.create_model("biformer_tiny", pretrained=True, features_only=True, out_indices=(2, 3), **SMALL)
    assert _all_equal(backbone, 0.25)


def test_a_card_sha256_is_checked_on_the_downloaded_file(fake_downloads, monkeypatch):
    served, _ = fake_downloads
    url, cache_name = _official_url("biformer_tiny")
    served[url] = _filled("biformer_tiny", 0.25)
    card = attnzoo.get_card("biformer_tiny")

    def card_with_sha256(sha256: str):
        checkpoint = dataclasses.replace(card.checkpoints[0], sha256=sha256)
        return lambda name: dataclasses.replace(card, checkpoints=[checkpoint])

    monkeypatch.setattr(attnzoo.weights.loading, "get_card", card_with_sha256("0" * 64))
    with pytest.raises(CheckpointError, match=rf"{cache_name}: sha256 mismatch: expected 0{{64}}"):
        timm.create_model("biformer_tiny", pretrained=True, **SMALL)

    cached = Path(torch.hub.get_dir()) / "checkpoints" / cache_name
    monkeypatch.setattr(attnzoo.weights.loading, "get_card", card_with_sha256(hashlib.sha256(cached.read_bytes()).hexdigest()))
    assert _all_equal(timm.create_model("biformer_tiny", pretrained=True, **SMALL), 0.25)


def test_offline_error_names_the_file_and_the_overlay_call_that_then_works(fake_downloads, hub_cache, tmp_path,
                                                                           monkeypatch):
    url, cache_name = _official_url("biformer_small")  # not served: the machine is offline
    with pytest.raises(OfficialWeightsUnavailableError) as info:
        timm.create_model("biformer_small", pretrained=True, **SMALL)
    message = str(info.value)
    assert url in message and str(hub_cache / cache_name) in message
    overlay_call = ("timm.create_model('biformer_small', pretrained=True, "
                    "pretrained_cfg_overlay=dict(file='biformer_small.in1k.pth'))")
    assert overlay_call in message

    # following the advice: the file fetched elsewhere, saved under that name, loads through the overlay
    monkeypatch.chdir(tmp_path)
    torch.save({"model": _filled("biformer_small", 0.5)}, tmp_path / "biformer_small.in1k.pth")
    model = timm.create_model("biformer_small", pretrained=True,
                              pretrained_cfg_overlay=dict(file="biformer_small.in1k.pth"), **SMALL)
    assert _all_equal(model, 0.5)


def test_an_official_file_of_another_variant_is_refused_by_name(tmp_path):
    """A file given through timm's overlay goes through the zoo's loader too: its one misfit message."""
    torch.save({"model": _filled("biformer_tiny", 0.25)}, tmp_path / "tiny.pth")
    with pytest.raises(CheckpointError, match=r"tiny.pth does not fit biformer_small: .*shape mismatch"):
        timm.create_model("biformer_small", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "tiny.pth")))


def test_without_the_zoo_loader_pretrained_says_to_import_zoo(hub_cache):
    """backbones alone (no `import attnzoo`) refuse to load a downloaded official file some weaker way."""
    _, cache_name = _official_url("biformer_tiny")
    hub_cache.mkdir(parents=True)
    torch.save({"model": _filled("biformer_tiny", 0.25)}, hub_cache / cache_name)  # already downloaded
    previous = install_checkpoint_loader(None)
    try:
        with pytest.raises(RuntimeError, match="`import attnzoo`"):
            timm.create_model("biformer_tiny", pretrained=True, **SMALL)
    finally:
        install_checkpoint_loader(previous)


def test_every_card_checkpoint_url_has_a_cache_file_of_its_own():
    """No two official URLs share a cache file (OneDrive's .../root/content, Tsinghua's .../?dl=1 name nothing)."""
    files: dict[str, str] = {}
    for name in attnzoo.list_cards():
        for checkpoint in attnzoo.get_card(name).checkpoints:
            filename = cache_filename(name, checkpoint.url)
            assert Path(filename).suffix, (name, filename)
            assert files.setdefault(filename, checkpoint.url) == checkpoint.url, f"{filename}: two URLs"
    assert len(files) >= 30
