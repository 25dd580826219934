"""The typed model settings: built from the resolved config with the schema's defaults, and a model
built from them has the same weights for a seed as before they existed."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from cmgh import config
from cmgh.models import ModelInputs, ModelSpec, build_model

# sha256 over (name, bytes) of every state_dict entry of `build_model(config.load(overrides), backbone,
# vocab_size=100)` after torch.manual_seed(0), computed when the model still read the config tree
# itself (cfg: Any and fallbacks of its own): the typed settings change no weight.
WEIGHTS = [
    ("ms", (), "cced77eeaa7a0e27f31a87f1bde281474fa6f514fe9372069c8dcbb3b8eeed2d"),
    ("ma", (), "72cb2b2b9d94ae6a39389d556fe77ff92983191f6e8dab44b45d7f9bfc5ae555"),
    ("ma", ("model.audio_tokenizer=logmel", "model.depth=3", "model.mlp_ratio=2"),
     "738b8f46174c8108a9267ed72351954f6ff77afe7931203bb4da373e374d0cfe"),
]


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize(("backbone", "overrides", "expected"), WEIGHTS)
def test_a_seed_builds_the_same_weights_as_before(backbone: str, overrides: tuple[str, ...], expected: str) -> None:
    cfg = config.load(overrides=list(overrides))
    torch.manual_seed(0)
    assert weights_digest(build_model(cfg, backbone, vocab_size=100)) == expected


def test_settings_come_from_the_resolved_config_and_the_schema() -> None:
    cfg = config.load(overrides=["model.width=48", "model.heads=3", "features.video.frames=4", "features.video.fps=2"])
    spec = ModelSpec.from_config(cfg.model)
    assert spec.width == 48 and spec.heads == 3 and spec.video_patch == tuple(cfg.model.video_patch)
    assert {f.name for f in dataclasses.fields(ModelSpec)} == set(config.schema()["properties"]["model"]["properties"]) - {"backbones"}
    assert all(f.default is dataclasses.MISSING for f in (*dataclasses.fields(ModelSpec), *dataclasses.fields(ModelInputs)))
    # a partial section: the schema's defaults, not the model's, fill the rest
    assert ModelSpec.from_config({"width": 48}) == dataclasses.replace(ModelSpec.from_config(config.from_dict({}).model), width=48)
    inputs = ModelInputs.from_config(cfg.features)
    assert inputs == ModelInputs(video_shape=(4, 32, 32), audio_samples=16000, audio_sample_rate=8000, max_tokens=16, vocab_size=4096)
    assert ModelInputs.from_config(cfg.features, vocab_size=100).vocab_size == 100  # the loaded vocabulary's wins
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.width = 8  # type: ignore[misc]
