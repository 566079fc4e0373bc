"""The caption decoder head: shapes, causal masking, memory modes, generation, and its place in the model."""

import pytest
import torch

from polyfuse.config import ConfigError
from polyfuse.data.targets import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from polyfuse.heads.decoder import CaptionDecoder
from polyfuse.registry import HEADS
from polyfuse.types import FusionOutput

B, D, V, L = 3, 16, 12, 7


def fused(seed: int = 0, tokens: bool = True, batch: int = B) -> FusionOutput:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, 5, dtype=torch.bool)
    mask[0, 3:] = False
    return FusionOutput(
        pooled=torch.randn(batch, D, generator=g),
        tokens=torch.randn(batch, 5, D, generator=g) if tokens else None,
        mask=mask if tokens else None,
    )


def targets(batch: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, V, (batch, 6), generator=g)
    ids[:, 0] = BOS_ID
    ids[:, -1] = EOS_ID
    ids[1, 3:] = PAD_ID
    ids[1, 2] = EOS_ID
    return ids


def decoder(**kw) -> CaptionDecoder:
    torch.manual_seed(0)
    params = dict(in_dim=D, out_dim=V, max_length=L, depth=2, heads=2, dropout=0.0)
    params.update(kw)
    return CaptionDecoder(**params).eval()


def test_registered_for_generation():
    assert HEADS.get("caption_decoder").metadata["task"] == "generation"
    assert CaptionDecoder.needs_fused


@pytest.mark.parametrize("memory", ["auto", "tokens", "pooled", "both"])
@pytest.mark.parametrize("tie", [True, False])
def test_teacher_forcing_and_generation_shapes(memory, tie):
    head = decoder(memory=memory, tie_embeddings=tie, dim=8)
    logits = head(fused(), targets=targets())
    assert logits.shape == (B, 5, V) and torch.isfinite(logits).all()
    generated = head(fused())
    assert generated.shape == (B, L - 1) and generated.dtype == torch.long
    assert hasattr(head, "output") != tie


def test_pooled_memory_when_the_fusion_has_no_tokens():
    head = decoder(memory="auto")
    assert head(fused(tokens=False), targets=targets()).shape == (B, 5, V)
    with pytest.raises(ConfigError, match="needs a fusion that returns tokens"):
        decoder(memory="tokens")(fused(tokens=False), targets=targets())


def test_future_tokens_never_change_earlier_logits():
    head = decoder()
    memory = fused()
    ids = targets()
    base = head(memory, targets=ids)  # logits after positions 0..4
    for k in range(1, 5):
        changed = ids.clone()
        changed[:, k] = (changed[:, k] + 3) % (V - 4) + 4
        out = head(memory, targets=changed)
        torch.testing.assert_close(out[:, :k], base[:, :k])  # positions before k cannot see token k
        assert not torch.allclose(out[:, k:], base[:, k:])  # ... and from k on they do


def test_masked_memory_tokens_are_ignored():
    head = decoder(memory="tokens")
    memory = fused()
    other = fused()
    other.tokens = other.tokens.clone()
    other.tokens[0, 3:] = 100.0  # masked positions of row 0
    torch.testing.assert_close(head(memory, targets=targets()), head(other, targets=targets()))
    empty = fused()
    empty.mask = torch.zeros_like(empty.mask)  # a row with no memory at all stays finite
    assert torch.isfinite(head(empty, targets=targets())).all()


def test_generation_follows_the_search_contract():
    head = decoder(max_length=L)
    out = head.generate(fused(batch=4))
    assert out.shape == (4, L - 1)
    for row in out.tolist():
        assert BOS_ID not in row and UNK_ID not in row
        if EOS_ID in row:
            end = row.index(EOS_ID)
            assert all(t == PAD_ID for t in row[end + 1:]) and PAD_ID not in row[:end]
        else:
            assert PAD_ID not in row
    # beam_size=1 is greedy; a beam keeps the width fixed
    torch.testing.assert_close(head.generate(fused(batch=4), beam_size=1), out)
    beams = head.generate_scored(fused(batch=4), beam_size=3)
    assert beams.tokens.shape == (4, L - 1) and beams.scores.shape == (4,)
    assert head.generate(fused(batch=4), max_new_tokens=2).shape == (4, L - 1)


def test_generation_is_batch_independent():
    head = decoder()
    memory = fused(batch=3)
    together = head.generate(memory, beam_size=2)
    for i in range(3):
        one = FusionOutput(pooled=memory.pooled[i:i + 1], tokens=memory.tokens[i:i + 1], mask=memory.mask[i:i + 1])
        torch.testing.assert_close(head.generate(one, beam_size=2), together[i:i + 1])


def test_backward_reaches_memory_and_embeddings():
    head = decoder().train()
    memory = fused()
    memory.pooled.requires_grad_(True)
    memory.tokens.requires_grad_(True)
    head(memory, targets=targets()).sum().backward()
    assert memory.tokens.grad.abs().sum() > 0
    assert head.embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"memory": "bogus"}, "memory"),
        ({"heads": 3}, "divisible"),
        ({"out_dim": 4}, "vocabulary"),
        ({"beam_size": 0}, "beam_size"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        decoder(**kw)


def test_model_passes_targets_only_to_generation_heads():
    from polyfuse.build import build_model
    from polyfuse.config import Config
    from component_fixtures import example_spec, random_inputs

    config = Config.from_dict({
        "data": {"dataset": "easy-vqa"},
        "model": {"dim": 16, "encoders": {"image": {"name": "cnn", "channels": [8]}}, "fusion": "fit"},
        "tasks": {
            "answer": {"column": "answer"},
            "caption": {"column": "caption", "type": "generation", "target": {"max_length": 6},
                        "head": {"depth": 1, "heads": 2}},
        },
    })
    spec = example_spec("image")
    model = build_model(config, {"image": spec}, {"answer": 5, "caption": V}).eval()
    assert model.heads["caption"].max_length == 6  # injected from tasks.caption.target
    inputs = {"image": random_inputs(spec, B)}
    present = {"image": torch.ones(B, dtype=torch.bool)}
    ids = targets()[:, :6]
    with torch.no_grad():
        trained = model(inputs, present, targets={"answer": torch.zeros(B, dtype=torch.long), "caption": ids})
        plain = model(inputs, present)
    assert trained.outputs["caption"].shape == (B, 5, V)  # teacher forcing
    assert plain.outputs["caption"].shape == (B, 5) and plain.outputs["caption"].dtype == torch.long  # generated
    torch.testing.assert_close(trained.outputs["answer"], plain.outputs["answer"])  # classification untouched
