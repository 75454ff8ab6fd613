"""``tripletkit mine-negatives`` end to end with a tiny deterministic encoder."""

from __future__ import annotations

import zlib

import pytest
import torch

import tripletkit.cli_mine_negatives as mine_cli
from tripletkit.cli import main
from tripletkit.mining.negatives import read_triplets


class HashingModel(torch.nn.Module):
    """Bag of words hashed into 1024 buckets (a text model with ``embed``, like the real ones)."""

    def forward(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), 1024)
        for i, text in enumerate(texts):
            for word in text.split():
                out[i, zlib.crc32(word.encode()) % 1023] += 1.0
            out[i, -1] += 0.01
        return out

    def embed(self, texts, batch_size=128, progress=False):
        return self(texts)


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.setattr(mine_cli, "load_encoder", lambda spec: HashingModel())
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("query,positive\nred apple,apple\nblue sky,sky\n")
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("text\napple\nred fruit\nsky\nblue sea\ngreen apple\n")
    return tmp_path, pairs, corpus


def test_writes_rows_and_resumes(files, capsys) -> None:
    tmp_path, pairs, corpus = files
    out = tmp_path / "triplets.parquet"
    argv = ["mine-negatives", "--pairs", str(pairs), "--corpus", str(corpus), "--model", "m"]
    argv += ["--out", str(out), "--num-negatives", "2", "--quiet"]
    assert main(argv) == 0
    assert "wrote 2 rows" in capsys.readouterr().out
    columns = read_triplets(out)
    assert columns["query"] == ["red apple", "blue sky"]
    assert columns["negative_1"][0] in {"red fruit", "green apple"}
    assert "apple" not in (columns["negative_1"][0], columns["negative_2"][0])
    assert (tmp_path / "triplets.parquet.cache").is_dir()
    assert main(argv) == 0  # a second run reads the cache
    assert read_triplets(out) == columns


def test_missing_column_and_file(files, capsys) -> None:
    tmp_path, pairs, corpus = files
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\na,b\n")
    argv = ["mine-negatives", "--corpus", str(corpus), "--model", "m", "--out"]
    assert main([*argv, str(tmp_path / "o.csv"), "--pairs", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "no column 'query'" in err and "--query-column" in err
    assert (
        main([*argv, str(tmp_path / "o.csv"), "--pairs", str(tmp_path / "nope.csv")]) == 2
    )  # a path that does not exist is bad usage
    assert "does not exist" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "o.txt"), "--pairs", str(pairs)]) == 2
    assert ".parquet" in capsys.readouterr().err


def test_unknown_model_name() -> None:
    with pytest.raises(FileNotFoundError, match="not a registered model"):
        mine_cli.load_encoder("no-such-model")
