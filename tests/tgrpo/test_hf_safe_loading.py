"""The Hugging Face path never unpickles code either: transformers and peft load ``.bin`` files weights-only."""

import os

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from tgrpo.policies import HFVLAPolicy, LoRASettings, save_tiny_llava  # noqa: E402


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_vla"))


def test_a_crafted_pytorch_model_bin_is_refused(tmp_path, model_dir):
    evil_dir, marker = tmp_path / "model", tmp_path / "pwned"
    evil_dir.mkdir()
    for f in model_dir.iterdir():
        if not f.name.endswith(".safetensors") and f.is_file():
            (evil_dir / f.name).write_bytes(f.read_bytes())
    torch.save({"model.weight": _Evil(marker)}, evil_dir / "pytorch_model.bin")
    # transformers 5 names the weights-only refusal; 4.40 wraps it in "Unable to load weights from pytorch
    # checkpoint file" (its loader passes weights_only=True too). Either way no code ran: the marker is absent.
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|unable to load weights from pytorch checkpoint"):
        HFVLAPolicy.from_pretrained(evil_dir, dtype="float32")
    assert not marker.exists()


def test_a_crafted_adapter_bin_is_refused(tmp_path, model_dir):
    policy = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", lora=LoRASettings(r=4, alpha=8))
    adapter, marker = policy.save_adapter(tmp_path / "adapter"), tmp_path / "pwned"
    for f in adapter.glob("adapter_model.*"):
        f.unlink()
    torch.save({"base_model.model.x.lora_A.weight": _Evil(marker)}, adapter / "adapter_model.bin")
    with pytest.raises(Exception, match="(?i)weights.only|unpickl"):
        HFVLAPolicy.from_pretrained(model_dir, dtype="float32", adapter_path=adapter)
    assert not marker.exists()
