"""Generation building blocks: search (greedy, beam), BLEU / exact match, text targets, the teacher-forcing loss."""

import json
import math

import numpy as np
import pytest
import torch

from polyfuse.config import Config, ConfigError, TaskConfig
from polyfuse.data.labels import encoder_from_state, make_encoder
from polyfuse.data.targets import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, TextTargetEncoder, strip_special
from polyfuse.generation.loss import SequenceCrossEntropy
from polyfuse.generation.metrics import generation_scores
from polyfuse.generation.search import beam_search, greedy_search, search

V = 8  # toy vocabulary: specials 0-3, words 4-7


def table_model(seed: int, vocab: int = V):
    """A deterministic toy language model: next-token log-probs depend on (last token, prefix length)."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab, 12, vocab, generator=g) * 2.0
    table[:, :, [PAD_ID, BOS_ID, UNK_ID]] = float("-inf")

    def step(prefix: torch.Tensor) -> torch.Tensor:
        return table[prefix[:, -1], prefix.shape[1]].log_softmax(dim=-1)

    return step


def sequence_logprob(step, tokens: torch.Tensor) -> float:
    """Summed log-prob of one generated row (up to and including EOS) under ``step``."""
    prefix = torch.tensor([[BOS_ID]])
    total = 0.0
    for token in tokens.tolist():
        if token == PAD_ID:
            break
        total += float(step(prefix)[0, token])
        prefix = torch.cat([prefix, torch.tensor([[token]])], dim=1)
        if token == EOS_ID:
            break
    return total


# --------------------------------------------------------------------------- search


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_beam_of_one(seed):
    step = table_model(seed)
    kw = dict(bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, max_new_tokens=7)
    greedy = greedy_search(step, 1, **kw)
    beam = beam_search(step, 1, beam_size=1, length_penalty=0.0, **kw)
    assert torch.equal(greedy.tokens, beam.tokens)
    assert greedy.scores.item() == pytest.approx(beam.scores.item(), abs=1e-5)
    assert greedy.scores.item() == pytest.approx(sequence_logprob(step, greedy.tokens[0]), abs=1e-5)


def test_search_is_batched_and_rows_independent():
    steps = [table_model(s) for s in (3, 4, 5)]

    def batched(prefix):  # row i of the batch follows model i; beams of a row are consecutive
        k = prefix.shape[0] // len(steps)
        return torch.cat([steps[i](prefix[i * k:(i + 1) * k]) for i in range(len(steps))])

    kw = dict(bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, max_new_tokens=6)
    together = beam_search(batched, 3, beam_size=3, **kw)
    for i, step in enumerate(steps):
        alone = beam_search(step, 1, beam_size=3, **kw)
        assert torch.equal(together.tokens[i], alone.tokens[0])
    greedy = greedy_search(batched, 3, **kw)
    for i, step in enumerate(steps):
        assert torch.equal(greedy.tokens[i], greedy_search(step, 1, **kw).tokens[0])


def constructed_step(prefix: torch.Tensor) -> torch.Tensor:
    """Greedy takes word 4 (p=0.6) but every continuation of it is poor (max 0.3, EOS);
    word 5 (p=0.4) is followed by EOS with p=0.9: 0.36 > 0.18."""
    probs = torch.full((prefix.shape[0], V), 1e-9)
    for i, row in enumerate(prefix.tolist()):
        last = row[-1]
        if last == BOS_ID:
            probs[i, 4], probs[i, 5] = 0.6, 0.4
        elif last == 4:
            probs[i, EOS_ID], probs[i, 6], probs[i, 7], probs[i, 4] = 0.3, 0.25, 0.25, 0.2
        else:
            probs[i, EOS_ID], probs[i, 6] = 0.9, 0.1
    return (probs / probs.sum(-1, keepdim=True)).log()


def test_beam_search_beats_greedy_on_a_constructed_case():
    kw = dict(bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, max_new_tokens=4)
    greedy = greedy_search(constructed_step, 1, **kw)
    beam = beam_search(constructed_step, 1, beam_size=2, length_penalty=0.0, **kw)
    assert greedy.tokens[0, :2].tolist() == [4, EOS_ID]
    assert beam.tokens[0, :2].tolist() == [5, EOS_ID]
    assert beam.scores.item() == pytest.approx(math.log(0.36), abs=1e-4)
    assert beam.scores.item() > greedy.scores.item() + 0.5
    assert sequence_logprob(constructed_step, beam.tokens[0]) > sequence_logprob(constructed_step, greedy.tokens[0])


def test_eos_stops_rows_and_pads_after_it():
    def eos_after_two(prefix):
        logp = torch.full((prefix.shape[0], V), -5.0)
        logp[:, 4] = -0.1
        if prefix.shape[1] >= 3:
            logp[:, EOS_ID] = 0.0
        return logp.log_softmax(-1)

    calls = []

    def counted(prefix):
        calls.append(prefix.shape[1])
        return eos_after_two(prefix)

    for beams in (1, 3):
        calls.clear()
        out = search(counted, 2, beam_size=beams, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, max_new_tokens=9)
        assert out.tokens.shape == (2, 9)
        assert out.tokens[0].tolist() == [4, 4, EOS_ID] + [PAD_ID] * 6
        assert max(calls) <= (4 if beams == 1 else 6)  # stopped once every row (beam) had ended, not after 9


def test_max_new_tokens_caps_length():
    def never_ends(prefix):
        logp = torch.full((prefix.shape[0], V), -9.0)
        logp[:, 5] = 0.0
        return logp.log_softmax(-1)

    for beams in (1, 2):
        out = search(never_ends, 1, beam_size=beams, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, max_new_tokens=3)
        assert out.tokens.tolist() == [[5, 5, 5]]


def test_length_penalty_prefers_longer_texts():
    def step(prefix):  # EOS now (p=0.5) or word 4 then EOS (0.5 * 0.95)
        logp = torch.full((prefix.shape[0], V), -20.0)
        for i, row in enumerate(prefix.tolist()):
            if row[-1] == BOS_ID:
                logp[i, EOS_ID], logp[i, 4] = math.log(0.5), math.log(0.5)
            else:
                logp[i, EOS_ID], logp[i, 6] = math.log(0.95), math.log(0.05)
        return logp

    kw = dict(beam_size=2, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID, max_new_tokens=4)
    assert beam_search(step, 1, length_penalty=0.0, **kw).tokens[0, 0].item() == EOS_ID
    assert beam_search(step, 1, length_penalty=1.0, **kw).tokens[0, :2].tolist() == [4, EOS_ID]


# --------------------------------------------------------------------------- metrics


def test_bleu_and_exact_match_on_known_strings():
    enc = TextTargetEncoder("caption").fit(["a red circle", "a blue square on the left side"])
    ids = lambda texts: torch.from_numpy(enc.collate([enc.encode(t)[0] for t in texts]))  # noqa: E731
    refs = ["a red circle", "a blue square on the left side"]
    perfect = generation_scores(ids(refs)[:, 1:], ids(refs))
    assert perfect == {"bleu1": 1.0, "bleu2": 1.0, "bleu3": 1.0, "bleu4": 1.0, "exact": 1.0}
    wrong = generation_scores(ids(["a blue circle", "a blue square on the left side"])[:, 1:], ids(refs))
    assert wrong["exact"] == 0.5
    # unigrams 9/10; n-grams (matches + 1) / (count + 1) with add-one smoothing; same length: no brevity penalty
    p2, p3, p4 = (6 + 1) / (8 + 1), (5 + 1) / (6 + 1), (4 + 1) / (4 + 1)
    assert wrong["bleu1"] == pytest.approx(0.9, abs=1e-6)
    assert wrong["bleu2"] == pytest.approx(math.sqrt(0.9 * p2), abs=1e-6)
    assert wrong["bleu4"] == pytest.approx((0.9 * p2 * p3 * p4) ** 0.25, abs=1e-6)
    # a shorter output pays the brevity penalty exp(1 - 10/8)
    short = generation_scores(ids(["a red circle", "a blue square on the"])[:, 1:], ids(refs))
    assert short["bleu1"] == pytest.approx(math.exp(1 - 10 / 8), abs=1e-6)
    # effective order: BLEU-4 of three-word targets is their BLEU-3, of one-word targets their BLEU-1
    three = generation_scores(ids(["a red circle", "a blue circle"])[:, 1:], ids(["a red circle", "a red circle"]))
    assert three["bleu4"] == pytest.approx(three["bleu3"]) and 0 < three["bleu4"] < three["bleu1"] < 1
    one = generation_scores(ids(["red", "blue", "red"])[:, 1:], ids(["red", "red", "red"]))
    assert one["bleu4"] == pytest.approx(2 / 3) and one["bleu1"] == pytest.approx(2 / 3)
    # outputs too short to hold any bigram of three-word targets get BLEU-2..4 = 0, not a free pass
    clipped = generation_scores(ids(["a", "a"])[:, 1:], ids(refs[:1] * 2))
    assert clipped["bleu1"] == pytest.approx(math.exp(1 - 6 / 2)) and clipped["bleu2"] == clipped["bleu4"] == 0.0
    nothing = generation_scores(torch.tensor([[EOS_ID, PAD_ID]]), ids(["a red circle"]))
    assert nothing["bleu1"] == 0.0 and nothing["bleu4"] == 0.0 and nothing["exact"] == 0.0


def test_strip_special():
    assert strip_special([BOS_ID, 7, 5, EOS_ID, 9, PAD_ID]) == [7, 5]
    assert strip_special([7, PAD_ID, 5, EOS_ID]) == [7, 5]


# --------------------------------------------------------------------------- text targets


def test_target_encoder_fits_encodes_and_decodes():
    enc = TextTargetEncoder("caption", max_length=5).fit(["A red circle.", "a blue circle", None, "  "])
    assert enc.classes[:4] == list(SPECIALS)
    assert enc.classes[4:] == ["a", "circle", ".", "blue", "red"]  # by count, then alphabetical
    ids, problem = enc.encode("a red circle.")
    assert problem is None
    assert ids.tolist() == [BOS_ID, enc.classes.index("a"), enc.classes.index("red"), enc.classes.index("circle"), EOS_ID]
    long, _ = enc.encode("a green circle a b c d")  # words cut to max_length - 2; unknown -> <unk>
    assert long.tolist() == [BOS_ID, 4, UNK_ID, 5, EOS_ID]
    empty, problem = enc.encode(float("nan"), "caption")
    assert len(empty) == 0 and problem.reason == "missing label"
    batch = enc.collate([ids, empty])
    assert batch.shape == (2, 5) and batch.dtype == np.int64 and (batch[1] == PAD_ID).all()
    assert enc.decode(batch) == ["a red circle", ""]
    assert enc.decode([[enc.classes.index("circle"), enc.classes.index("."), EOS_ID, 6]]) == ["circle."]


def test_target_encoder_state_round_trip_is_json():
    enc = TextTargetEncoder("answer", max_length=6, vocab_size=7, min_count=1, lowercase=False)
    enc.fit(["Yes", "no", "no", "Yes", "circle", "red"])
    state = json.loads(json.dumps(enc.state_dict()))
    back = encoder_from_state(state)
    assert isinstance(back, TextTargetEncoder)
    assert back.classes == enc.classes and len(back.classes) == 7
    for text in ("Yes", "no", "red circle", "yes"):
        assert back.encode(text)[0].tolist() == enc.encode(text)[0].tolist()
    assert back.decode([enc.encode("no Yes")[0]]) == ["no Yes"]


def test_generation_task_config_and_errors():
    config = Config.from_dict({"data": {"dataset": "easy-vqa-captions"},
                               "tasks": {"caption": {"column": "caption", "type": "generation", "target": {"max_length": 9}}}})
    enc = make_encoder(config.tasks["caption"])
    assert isinstance(enc, TextTargetEncoder) and enc.max_length == 9
    with pytest.raises(ConfigError, match="target.bogus: unknown option"):
        make_encoder(TaskConfig(column="c", type="generation", target={"bogus": 1}))
    with pytest.raises(ConfigError, match="target.max_length"):
        make_encoder(TaskConfig(column="c", type="generation", target={"max_length": 1}))
    with pytest.raises(ConfigError, match="only generation tasks"):
        make_encoder(TaskConfig(column="c", type="classification", target={"max_length": 5}))
    with pytest.raises(ConfigError, match="tasks.t.type"):
        Config.from_dict({"tasks": {"t": {"column": "c", "type": "translation"}}})
    from polyfuse.build import validate_config

    bad = Config.from_dict({"data": {"dataset": "easy-vqa-captions"},
                            "tasks": {"caption": {"column": "caption", "type": "generation", "target": {"maxlen": 9}}}})
    with pytest.raises(ConfigError, match="tasks.caption.target.maxlen"):
        validate_config(bad)
    injected = Config.from_dict({"data": {"dataset": "easy-vqa-captions"},
                                 "tasks": {"caption": {"column": "caption", "type": "generation", "head": {"max_length": 9}}}})
    with pytest.raises(ConfigError, match="tasks.caption.head.max_length: set by polyfuse"):
        validate_config(injected)


# --------------------------------------------------------------------------- loss


def test_teacher_forcing_loss_ignores_pad():
    torch.manual_seed(0)
    targets = torch.tensor([[BOS_ID, 5, 6, EOS_ID, PAD_ID, PAD_ID], [BOS_ID, 7, EOS_ID, PAD_ID, PAD_ID, PAD_ID]])
    logits = torch.randn(2, 5, V, requires_grad=True)
    loss = SequenceCrossEntropy()(logits, targets)
    following = targets[:, 1:]
    real = following != PAD_ID
    expected = torch.nn.functional.cross_entropy(logits[real], following[real])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    changed = logits.detach().clone()
    changed[~real] = torch.randn(int((~real).sum()), V) * 10  # logits at PAD positions do not matter
    assert SequenceCrossEntropy()(changed, targets).item() == pytest.approx(loss.item(), abs=1e-6)
    loss.backward()
    assert logits.grad[~real].abs().sum() == 0 and logits.grad[real].abs().sum() > 0
    empty = SequenceCrossEntropy()(logits, torch.zeros_like(targets))  # no target at all: 0 with a gradient
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="do not fit"):
        SequenceCrossEntropy()(logits, targets[:, :4])
