"""The ONNX decoder (training.generator_export + services.generator.onnx_decoding): the same
tokens as torch `generate`, on a random bert2bert (fast) and on the trained cpu artifact,
and the service's choice of backend."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from services.generator.model import (
    ArtifactError,
    GenerationRequest,
    GeneratorModel,
    agreement_holds,
    int8_holds,
)
from services.generator.onnx_decoding import NoRepeatNGrams, OnnxGreedyDecoder
from training.generator_export import DECODER_STEP, ENCODER, export_generator


def random_bert2bert(vocab: int = 60, layers: int = 2):
    from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel

    torch.manual_seed(0)
    common = dict(vocab_size=vocab, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    enc = BertConfig(num_hidden_layers=layers, **common)
    dec = BertConfig(num_hidden_layers=layers, is_decoder=True, add_cross_attention=True, **common)
    model = EncoderDecoderModel(EncoderDecoderConfig.from_encoder_decoder_configs(enc, dec))
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 1, 0, 2
    return model.eval()


@pytest.mark.parametrize("no_repeat", [0, 3])
def test_onnx_greedy_decoding_is_generate_token_for_token(tmp_path, no_repeat):
    model = random_bert2bert()
    export_generator(model, tmp_path)
    decoder = OnnxGreedyDecoder(
        tmp_path / ENCODER,
        tmp_path / DECODER_STEP,
        start_id=1,
        end_id=2,
        pad_id=0,
        no_repeat_ngram_size=no_repeat,
    )
    gen = torch.Generator().manual_seed(1)
    for batch, length, budget in ((1, 5, 16), (4, 9, 24), (3, 3, 1)):
        ids = torch.randint(3, 60, (batch, length), generator=gen)
        mask = torch.ones_like(ids)
        if batch > 1:  # a padded row: the cross-attention mask must hold
            mask[1, length // 2 :] = 0
            ids[1, length // 2 :] = 0
        ref = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=budget,
            do_sample=False,
            num_beams=1,
            no_repeat_ngram_size=no_repeat,
        )
        assert decoder.generate(ids.numpy(), mask.numpy(), budget) == ref.tolist()


def test_no_repeat_ngrams_bans_exactly_the_completing_token():
    row = [1, 5, 6, 7, 5]
    ngrams = NoRepeatNGrams(3)
    for n in range(2, len(row) + 1):
        ngrams.add(row[:n])
    assert ngrams.banned([1, 5, 6, 7, 5]) == set()  # (7, 5) never continued
    assert ngrams.banned([1, 5, 6, 7, 5, 6]) == {7}  # (5, 6) was followed by 7
    assert NoRepeatNGrams(0).banned(row) == set()


def test_encoder_outputs_are_independent_of_the_batch(tmp_path):
    """A row's cross keys do not change with the rows padded beside it (the batcher mixes
    requests)."""
    export_generator(random_bert2bert(), tmp_path)
    decoder = OnnxGreedyDecoder(
        tmp_path / ENCODER, tmp_path / DECODER_STEP,
        start_id=1, end_id=2, pad_id=0, no_repeat_ngram_size=3,
    )  # fmt: skip
    short = np.array([[5, 6, 7]])
    alone = decoder.generate(short, np.ones_like(short), 12)
    long = np.array([[5, 6, 7, 0, 0, 0], [9, 8, 7, 6, 5, 4]])
    mask = np.array([[1, 1, 1, 0, 0, 0], [1] * 6])
    assert decoder.generate(long, mask, 12)[0] == alone[0]


def test_requests_joining_a_running_batch_get_the_replies_they_get_alone(tmp_path):
    """Continuous batching: rows join at different steps, with sources of other lengths and
    their own budgets, and leave when they end; each writes what it writes alone."""
    export_generator(random_bert2bert(), tmp_path)
    decoder = OnnxGreedyDecoder(
        tmp_path / ENCODER, tmp_path / DECODER_STEP,
        start_id=1, end_id=2, pad_id=0, no_repeat_ngram_size=3,
    )  # fmt: skip
    rng = np.random.default_rng(3)
    sources = [rng.integers(3, 60, size=n) for n in (4, 9, 2, 7, 5, 11)]
    budgets = [20, 6, 20, 13, 1, 20]

    def alone(i: int) -> list[int]:
        ids = sources[i][None, :]
        return decoder.generate(ids, np.ones_like(ids), budgets[i])[0]

    def padded(indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(sources[i]) for i in indices)
        ids = np.zeros((len(indices), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, i in enumerate(indices):
            ids[row, : len(sources[i])], mask[row, : len(sources[i])] = sources[i], 1
        return ids, mask

    batch = decoder.batch()
    joins = {0: [0, 1], 2: [2], 3: [3, 4], 7: [5]}  # step -> the requests joining before it
    got: dict[int, list[int]] = {}
    step = 0
    while len(got) < len(sources):
        if step in joins:
            batch.admit(joins[step], *padded(joins[step]), [budgets[i] for i in joins[step]])
        got.update((row.key, row.tokens) for row in batch.step())
        step += 1
    assert {i: got[i] for i in range(len(sources))} == {i: alone(i) for i in range(len(sources))}
    assert len(got[4]) == 2  # a budget of one token: one step, then it left
    assert len(batch) == 0 and batch.state == {}


def test_a_dropped_row_leaves_and_the_others_write_what_they_write_alone(tmp_path):
    export_generator(random_bert2bert(), tmp_path)
    decoder = OnnxGreedyDecoder(
        tmp_path / ENCODER, tmp_path / DECODER_STEP,
        start_id=1, end_id=2, pad_id=0, no_repeat_ngram_size=3,
    )  # fmt: skip
    sources = np.array([[5, 6, 7, 8, 0, 0], [9, 8, 7, 6, 5, 4], [11, 12, 0, 0, 0, 0]])
    mask = (sources > 0).astype(np.int64)
    alone = [
        decoder.generate(s[m > 0][None], m[m > 0][None], 12)[0]
        for s, m in zip(sources, mask, strict=True)
    ]
    batch = decoder.batch()
    batch.admit([0, 1, 2], sources, mask, [12, 12, 12])
    got = {}
    for _ in range(2):
        got.update((r.key, r.tokens) for r in batch.step())
    batch.drop({1})  # its caller went away: a third of the rows, compacted at once
    assert [r.key for r in batch.rows] == [k for k in (0, 2) if k not in got]
    assert batch.state["cross_key_0"].shape[0] == batch.width
    while len(batch):
        got.update((r.key, r.tokens) for r in batch.step())
    assert got[0] == alone[0] and got[2] == alone[2] and 1 not in got


@pytest.mark.slow
def test_trained_artifact_is_served_by_onnx_with_generates_replies(small_generator, tmp_path):
    manifest = json.loads((small_generator / "manifest.json").read_text())
    backends = manifest["backends"]
    for kind in ("onnx", "onnx-int8"):
        assert (small_generator / backends[kind]["decoder_step"]).is_file()
        assert 0 < backends[kind]["val"]["template_exact_match"] <= 1
    assert backends["onnx"]["agreement"]["compared"] > 0
    assert backends["onnx"]["agreement"]["identical"] >= 0.98

    auto = GeneratorModel(small_generator)
    assert auto.backend == ("onnx-int8" if int8_holds(manifest) else "onnx")
    assert auto.info()["backend"] == auto.backend and auto._model is None  # no torch loaded
    fp32 = GeneratorModel(small_generator, backend="onnx")
    by_torch = GeneratorModel(small_generator, backend="torch")
    int8 = GeneratorModel(small_generator, backend="onnx-int8")
    reqs = [
        GenerationRequest("timers_and_alarms", "set a timer for 12 minutes",
                          {"duration": "12 minutes"}),
        GenerationRequest("calculations_and_conversions", "what is 6 times 7",
                          {"expression": "6 * 7"}, {"result": "42"}),
        GenerationRequest("small_talk", "hello there"),
        GenerationRequest("small_talk", "good morning to you my friend", max_new_tokens=3),
    ]  # fmt: skip
    fp32_out, torch_out = fp32.respond(reqs), by_torch.respond(reqs)
    assert [(r.reply, r.generated_tokens) for r in fp32_out] == [
        (r.reply, r.generated_tokens) for r in torch_out
    ]
    assert fp32_out[3].generated_tokens <= 3
    for out in (fp32_out, int8.respond(reqs)):
        assert "12 minutes" in out[0].reply and "42" in out[1].reply
    # int8's scales are fixed (encoder) or per row (decoder step): a request's reply is the
    # same in any batch.
    assert [r.reply for r in int8.respond(reqs)] == [int8.respond([r])[0].reply for r in reqs]
    # The service runs batches on several threads at once (one per core by default): the
    # same replies as one at a time, whatever the interleaving.
    assert auto.workers == len(os.sched_getaffinity(0)) and fp32.workers == auto.workers
    assert by_torch.workers == 1
    alone = [r.reply for r in int8.respond(reqs)]
    with ThreadPoolExecutor(4) as pool:
        rounds = list(pool.map(lambda _: [r.reply for r in int8.respond(reqs)], range(12)))
    assert rounds == [alone] * 12
    # Beam search is torch's: configured, the torch backend serves; asked for per call on
    # the ONNX backend, the torch model loads and answers.
    assert GeneratorModel(small_generator, num_beams=2).backend == "torch"
    [(beam_reply, _)] = auto.generate_delexicalised([auto.source_of(reqs[0])], [48], num_beams=2)
    assert auto._model is not None and "<duration>" in beam_reply

    # Settings the ONNX decoder cannot honour: auto falls back, an explicit onnx says why.
    assert GeneratorModel(small_generator, quantize="int8").backend == "torch"
    with pytest.raises(ArtifactError, match="num_beams 2"):
        GeneratorModel(small_generator, backend="onnx-int8", num_beams=2)
    bare = tmp_path / "no-onnx"
    shutil.copytree(small_generator, bare)
    (bare / backends["onnx-int8"]["encoder"]).unlink()
    assert GeneratorModel(bare).backend == "onnx"  # int8 incomplete: fp32
    with pytest.raises(ArtifactError, match="encoder.int8.onnx: missing"):
        GeneratorModel(bare, backend="onnx-int8")
    shutil.rmtree(bare / "onnx")
    assert GeneratorModel(bare).backend == "torch"

    # An export whose agreement with generate was not recorded, or of an older graph format:
    # auto serves torch; asked for explicitly, the message says what to do.
    for change in ("agreement", "format"):
        other = tmp_path / f"no-{change}"
        shutil.copytree(small_generator, other)
        edited = json.loads((other / "manifest.json").read_text())
        for kind in ("onnx", "onnx-int8"):
            edited["backends"][kind].pop(change, None)
        (other / "manifest.json").write_text(json.dumps(edited))
        assert GeneratorModel(other).backend == "torch", change
    with pytest.raises(ArtifactError, match="older format"):
        GeneratorModel(other, backend="onnx")


def test_int8_is_served_only_when_its_validation_figures_hold():
    def manifest(int8_match: float, int8_fidelity: float = 1.0) -> dict:
        return {
            "backends": {
                "onnx": {"val": {"template_exact_match": 0.95, "slot_fidelity": 1.0}},
                "onnx-int8": {
                    "val": {"template_exact_match": int8_match, "slot_fidelity": int8_fidelity}
                },
            }
        }

    assert int8_holds(manifest(0.95)) and int8_holds(manifest(0.946))
    assert not int8_holds(manifest(0.944))
    assert not int8_holds(manifest(0.96, int8_fidelity=0.99))
    assert not int8_holds({"backends": {"onnx": {"val": {}}}})


def test_onnx_is_served_only_when_it_agreed_with_generate():
    def manifest(**agreement) -> dict:
        return {"backends": {"onnx": {"agreement": agreement}}}

    assert agreement_holds(manifest(compared=256, identical=1.0))
    assert agreement_holds(manifest(compared=256, identical=0.98))
    assert not agreement_holds(manifest(compared=256, identical=0.97))
    assert not agreement_holds(manifest(compared=0, identical=1.0))
    assert not agreement_holds({"backends": {"onnx": {}}})
