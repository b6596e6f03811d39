"""The Phi catalog: parsed once, complete, pinned, and honest about its sources."""

from __future__ import annotations

import dataclasses
import math
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
PULLABLE = [e for e in catalog.entries() if e.pullable]


def test_dataframe_has_the_family_with_typed_columns():
    df = catalog.load_catalog()
    assert {"Phi-4-mini-instruct", "Phi-4", "Phi-3.5-mini-instruct"} <= set(df["model"])
    assert df["name"].is_unique and df["model"].is_unique
    assert (df["parameters_b"] > 0).all() and (df["context_length"] >= 4096).all()
    assert set(df["licence"]) == {"MIT"}
    assert df["modalities"].str.startswith("text").all()
    assert df["released"].str.fullmatch(r"20\d\d-\d\d").all()


def test_the_frame_is_built_from_the_entries_and_agrees_with_them():
    df = catalog.load_catalog()
    columns = [f.name for f in dataclasses.fields(catalog.Entry)]
    assert list(df.columns) == columns + ["pullable", "gguf_size_gb"]
    assert list(df["name"]) == [e.name for e in catalog.entries()]
    for entry, (_, row) in zip(catalog.entries(), df.iterrows(), strict=True):
        assert row["pullable"] == entry.pullable  # one `pullable`, the entry's
        assert row["aliases"] == ";".join(entry.aliases)
        assert bool(row["in_seed"]) == entry.in_seed and row["sha256"] == entry.sha256
        if entry.pullable:
            assert row["gguf_size_bytes"] == entry.gguf_size_bytes
            assert row["gguf_size_gb"] == round(entry.gguf_size_bytes / 1e9, 2)
        else:
            assert math.isnan(row["gguf_size_bytes"])
        if entry.active_parameters_b is None:
            assert math.isnan(row["active_parameters_b"])


def test_the_csv_is_parsed_once(monkeypatch, tmp_path):
    catalog.entries()  # parsed (and cached) here ...
    monkeypatch.setattr(catalog, "resources", None)  # ... so nothing may read the file again
    assert len(catalog.load_catalog()) == len(catalog.entries())
    assert len(catalog.seed_lifecycle()) == len(SEED_NAMES)
    assert len(catalog.downloaded(tmp_path)) == len(PULLABLE)


def test_seed_lifecycle_covers_the_six_github_models_names():
    life = catalog.seed_lifecycle()
    assert set(life["model"]) == SEED_NAMES
    assert life["on_github_models"].str.contains("2026-07-30").all()
    known = set(catalog.load_catalog()["model"])
    assert set(life["replaced_by"]) <= known  # every replacement is itself in the catalog


@pytest.mark.parametrize("e", PULLABLE, ids=lambda e: e.name)
def test_every_pullable_gguf_is_pinned_to_a_commit_with_its_source(e):
    assert e.gguf_file.endswith(".gguf") and "/" in e.gguf_repo and e.gguf_quant
    assert re.fullmatch(r"[0-9a-f]{40}", e.gguf_revision) and e.pinned, e.gguf_revision
    assert "/" in e.revision_source  # a repository + path, or a page
    assert e.url() == (
        f"https://huggingface.co/{e.gguf_repo}/resolve/{e.gguf_revision}/{e.gguf_file}"
    )
    assert e.url("http://127.0.0.1:9/").startswith(f"http://127.0.0.1:9/{e.gguf_repo}/resolve/")
    assert e.local_file == f"{e.model}-{e.gguf_quant}.gguf"


@pytest.mark.parametrize("e", PULLABLE, ids=lambda e: e.name)
def test_sizes_are_positive_and_sourced(e):
    assert e.gguf_size_bytes > 1e9 and e.size_source
    if e.size_exact:  # an exact size is quoted, digit for digit, by its source
        assert str(e.gguf_size_bytes) in e.size_source.replace(",", "")


@pytest.mark.parametrize("e", PULLABLE, ids=lambda e: e.name)
def test_sha256_is_pinned_or_its_absence_explained(e):
    assert e.sha256_source, e.name  # every checksum (or its absence) has a stated source
    if e.sha256:
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256)
    else:
        assert "X-Linked-Etag" in e.sha256_source  # says why, and what pull checks instead


def test_phi_4_mini_is_the_unsloth_file_other_projects_pin():
    e = catalog.get("phi-4-mini")
    assert (e.gguf_repo, e.gguf_file) == (
        "unsloth/Phi-4-mini-instruct-GGUF",
        "Phi-4-mini-instruct-Q4_K_M.gguf",
    )
    assert e.gguf_size_bytes == 2_491_874_272 and e.size_exact
    assert e.local_file == "Phi-4-mini-instruct-Q4_K_M.gguf"  # what the server looks for


def test_non_pullable_entries_have_no_url_and_say_why():
    for e in catalog.entries():
        if not e.pullable:
            assert e.notes and not e.local_file
            with pytest.raises(ValueError):
                e.url()


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
