"""The Phi catalog: the shipped CSV is complete, consistent and honest about its sources."""

from __future__ import annotations

import re

import pytest

from phihelpers import catalog

SEED_NAMES = {
    "Phi-3-medium-128k-instruct",
    "Phi-3-medium-4k-instruct",
    "Phi-3-mini-128k-instruct",
    "Phi-3-mini-4k-instruct",
    "Phi-3-small-128k-instruct",
    "Phi-3-small-8k-instruct",
}


def test_dataframe_has_the_family_with_typed_columns():
    df = catalog.load_catalog()
    assert {"Phi-4-mini-instruct", "Phi-4", "Phi-3.5-mini-instruct"} <= set(df["model"])
    assert df["name"].is_unique and df["model"].is_unique
    assert (df["parameters_b"] > 0).all() and (df["context_length"] >= 4096).all()
    assert set(df["licence"]) == {"MIT"}
    assert df["modalities"].str.startswith("text").all()
    assert df["released"].str.fullmatch(r"20\d\d-\d\d").all()


def test_seed_lifecycle_covers_the_six_github_models_names():
    life = catalog.seed_lifecycle()
    assert set(life["model"]) == SEED_NAMES
    assert life["on_github_models"].str.contains("2026-07-30").all()
    known = set(catalog.load_catalog()["model"])
    assert set(life["replaced_by"]) <= known  # every replacement is itself in the catalog


def test_pullable_entries_say_where_the_gguf_is_and_how_it_is_checked():
    pullable = [e for e in catalog.entries() if e.pullable]
    assert "phi-4-mini" in {e.name for e in pullable}
    for e in pullable:
        assert e.gguf_file.endswith(".gguf") and "/" in e.gguf_repo and e.gguf_quant
        assert e.gguf_size_bytes > 1e9 and e.size_source
        assert e.sha256_source, e.name  # every checksum (or its absence) has a stated source
        if e.sha256:
            assert re.fullmatch(r"[0-9a-f]{64}", e.sha256)
            assert re.fullmatch(r"[0-9a-f]{40}", e.gguf_revision), (
                "a pinned hash needs a pinned commit"
            )
        else:
            assert "X-Linked-Etag" in e.sha256_source
        assert e.url().startswith(f"https://huggingface.co/{e.gguf_repo}/resolve/")
        assert e.local_file == f"{e.model}-{e.gguf_quant}.gguf"


def test_names_resolve_case_insensitively_through_aliases():
    assert catalog.find("PHI4-MINI").name == "phi-4-mini"
    assert catalog.find("Phi-4-mini-instruct").name == "phi-4-mini"
    assert catalog.find("phi-3-small-8k-instruct").model == "Phi-3-small-8k-instruct"
    assert catalog.find("gpt-4o") is None
    with pytest.raises(catalog.UnknownModelError, match="phi-4-mini"):
        catalog.get("gpt-4o")


def test_downloaded_reflects_the_models_dir(tmp_path):
    entry = catalog.get("phi-4-mini")
    assert not catalog.downloaded(tmp_path).set_index("name").loc["phi-4-mini", "downloaded"]
    (tmp_path / (entry.local_file + ".part")).write_bytes(b"GGUF")  # half a download is not one
    assert not catalog.is_downloaded(entry, tmp_path)
    (tmp_path / entry.local_file).write_bytes(b"GGUF")
    table = catalog.downloaded(tmp_path).set_index("name")
    assert table.loc["phi-4-mini", "downloaded"] and not table.loc["phi-4", "downloaded"]
