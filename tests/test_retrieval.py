"""Retrieval metrics on hand-made similarity matrices, and the translation objective evaluated by retrieval."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from polyfuse.config import Config, ConfigError
from polyfuse.objectives.contrastive import ContrastiveObjective
from polyfuse.objectives.translation import TranslationObjective
from polyfuse.retrieval.embed import SplitEmbeddings, evaluate_embeddings, group_codes
from polyfuse.retrieval.metrics import query_ranks, ranks_from_scores, retrieval_metrics, summarize_ranks
from polyfuse.types import EncoderOutput


# --------------------------------------------------------------------------- metrics


def test_ranks_from_a_hand_made_similarity_matrix() -> None:
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.0],  # own match first -> rank 1
            [0.8, 0.5, 0.1, 0.0],  # one target above -> rank 2
            [0.7, 0.6, 0.1, 0.3],  # three above -> rank 4
            [0.0, 0.0, 0.0, 0.5],  # rank 1
        ]
    )
    relevant = torch.eye(4, dtype=torch.bool)
    assert ranks_from_scores(scores, relevant).tolist() == [1, 2, 4, 1]


def test_ties_count_against_the_query_and_missing_matches_are_left_out() -> None:
    scores = torch.zeros(3, 3)  # a collapsed space: everything ties
    relevant = torch.tensor([[True, False, False], [False, True, False], [False, False, False]])
    ranks = ranks_from_scores(scores, relevant)
    assert ranks.tolist() == [3, 3, 0]  # last, not first; query 2 has no relevant target
    summary = summarize_ranks(ranks, relevant.sum(dim=1), num_targets=3, ks=(1, 3))
    assert summary["queries"] == 2 and summary["R@1"] == 0.0 and summary["R@3"] == 1.0


def test_recall_at_k_and_median_rank_over_a_split() -> None:
    # query i scores its own target 0 and (rank_i - 1) other targets 0.5: its rank is known
    ranks_wanted = [1, 1, 2, 3, 5]
    queries = torch.full((5, 5), -1.0)
    for i, r in enumerate(ranks_wanted):
        queries[i, i] = 0.0
        others = [j for j in range(5) if j != i][: r - 1]
        queries[i, others] = 0.5
    targets = torch.eye(5)  # cosine(query, target j) is proportional to queries[:, j]
    ranks, counts = query_ranks(queries, targets, torch.arange(5), torch.arange(5))
    assert ranks.tolist() == ranks_wanted
    metrics = summarize_ranks(ranks, counts, 5, ks=(1, 2, 5))
    assert metrics["R@1"] == pytest.approx(2 / 5)
    assert metrics["R@2"] == pytest.approx(3 / 5)
    assert metrics["R@5"] == pytest.approx(1.0)
    assert metrics["median_rank"] == 2.0
    assert metrics["mean_rank"] == pytest.approx(12 / 5)
    assert metrics["chance_R@1"] == pytest.approx(1 / 5)
    # chunking the queries changes nothing
    chunked, _ = query_ranks(queries, targets, torch.arange(5), torch.arange(5), chunk=2)
    assert chunked.tolist() == ranks_wanted


def test_groups_make_every_row_of_a_class_a_match() -> None:
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.0, 1.0], [1.0, 0.1], [1.0, 0.0]])  # classes: b, a, a
    exact = retrieval_metrics(q, t[:2], ks=(1,))  # pairs by position: q0-t0 (wrong side), q1-t1
    assert exact["R@1"] == 0.0
    by_class = retrieval_metrics(q, t, torch.tensor([0, 1]), torch.tensor([1, 0, 0]), ks=(1,))
    assert by_class["R@1"] == 1.0 and by_class["chance_R@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_group_codes_by_row_or_by_value() -> None:
    rows = torch.tensor([10, 11, 12, 13])
    assert group_codes(rows, None).tolist() == [10, 11, 12, 13]
    codes = group_codes(rows, {10: "cat", 11: "dog", 12: "cat", 13: float("nan")})
    assert codes[0] == codes[2] and codes[0] != codes[1] and codes[3] < 0


# --------------------------------------------------------------------------- translation


def _features(**pooled: torch.Tensor) -> dict[str, EncoderOutput]:
    return {
        k: EncoderOutput(tokens=v[:, None, :], pooled=v, mask=torch.ones(v.shape[0], 1, dtype=torch.bool))
        for k, v in pooled.items()
    }


def test_translation_learns_a_mapping_and_is_evaluated_by_retrieval() -> None:
    torch.manual_seed(0)
    n, d_src, d_tgt = 48, 12, 8
    source = torch.randn(n, d_src)
    mapping = torch.randn(d_src, d_tgt)
    target = torch.tanh(source @ mapping)
    objective = TranslationObjective({"audio": d_src, "image": d_tgt}, {}, source="audio", target="image", hidden=64)
    present = {"audio": torch.ones(n, dtype=torch.bool), "image": torch.ones(n, dtype=torch.bool)}
    present["image"][-4:] = False  # rows without a target take no part
    batch = {"present": present, "row": torch.arange(n)}
    out = SimpleNamespace(features=_features(audio=source, image=target))

    space = {"translate": objective}

    def recall() -> float:
        with torch.no_grad():
            emb = objective.retrieval_embeddings(out.features)
        split = SplitEmbeddings(rows=torch.arange(n), vectors=emb, present=present)
        return evaluate_embeddings({"translate": split}, space, ks=(1,))["translate"]["audio->image"]["R@1"]

    before = recall()
    optimizer = torch.optim.Adam(objective.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        result = objective(None, batch, out)
        first = float(result["loss"].detach()) if first is None else first
        optimizer.zero_grad()
        result["loss"].backward()
        optimizer.step()
    assert float(result["loss"].detach()) < 0.3 * first
    assert float(result["cosine"]) > 0.9
    after = recall()
    assert after > 0.6 and after > before + 0.3  # 44 targets: chance R@1 ~ 0.02


def test_translation_target_is_detached_and_missing_rows_are_ignored() -> None:
    objective = TranslationObjective({"a": 4, "b": 3}, {}, source="a", target="b", loss="mse")
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 3, requires_grad=True)
    present = {"a": torch.tensor([True, True, False]), "b": torch.tensor([True, False, True])}
    result = objective(None, {"present": present, "row": torch.arange(3)}, SimpleNamespace(features=_features(a=a, b=b)))
    result["loss"].backward()
    assert b.grad is None  # the target is what is predicted, not trained
    assert a.grad is not None and a.grad[1:].abs().sum() == 0  # only row 0 has both inputs
    expected = torch.nn.functional.mse_loss(objective.translate(a[:1]), b[:1])
    assert torch.allclose(result["loss"], expected)


def test_translation_via_a_contrastive_space_reads_its_width() -> None:
    clip = ContrastiveObjective({"a": 4, "b": 6}, dim=5)
    objective = TranslationObjective({"a": 4, "b": 6}, {"clip": clip}, source="a", target="b", via="clip")
    assert objective.out_dim == 5
    model = SimpleNamespace(objectives={"clip": clip})
    feats = _features(a=torch.randn(2, 4), b=torch.randn(2, 6))
    emb = objective.retrieval_embeddings(feats, model)
    assert emb["a"].shape == (2, 5) and torch.allclose(emb["b"].norm(dim=-1), torch.ones(2))


def test_translation_config_errors_name_the_key_path() -> None:
    from polyfuse.build import build_objectives

    config = Config.from_dict(
        {"data": {"train": "x.csv"}, "objectives": {"tr": {"name": "translation", "source": "a", "target": "b", "via": "clip"}}}
    )
    with pytest.raises(ConfigError, match=r"objectives\.tr\.via: 'clip' is not a contrastive objective"):
        build_objectives(config, {"a": 4, "b": 4}, 8, {})
    config = Config.from_dict(
        {"data": {"train": "x.csv"}, "objectives": {"tr": {"name": "translation", "source": "a", "target": "zz"}}}
    )
    with pytest.raises(ConfigError, match=r"objectives\.tr\.inputs: 'zz' is not an input; allowed: a, b"):
        build_objectives(config, {"a": 4, "b": 4}, 8, {})


def test_the_translation_recipe_retrieves_through_translated_embeddings_both_ways(tmp_path) -> None:  # noqa: ANN001
    import polyfuse

    run = polyfuse.fit("avmnist-translation", out=tmp_path / "run", progress=False,
                       overrides=["data.max_rows=600", "train.epochs=6", "train.threads=1"])
    retrieval = run.metrics["retrieval"]["test"]
    for objective, direction in (("audio_to_image", "audio->image"), ("image_to_audio", "image->audio")):
        result = retrieval[objective][direction]
        assert result["queries"] == 600 and result["chance_R@1"] == pytest.approx(0.1, abs=0.02)
        # a translated spoken digit finds an image of its digit first far more often than chance
        # (measured R@1 0.37 audio->image, 0.68 image->audio)
        assert result["R@1"] > 2.5 * result["chance_R@1"], (direction, result)
        assert result["R@5"] >= result["R@1"]
