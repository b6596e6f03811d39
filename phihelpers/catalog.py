"""The Phi model family as data: sizes, context, lifecycle, and where a runnable GGUF lives.

    from phihelpers.catalog import load_catalog, seed_lifecycle, downloaded
    load_catalog()          # pandas DataFrame, one row per Phi model
    seed_lifecycle()        # the seed's six Phi-3 names on GitHub Models, and what replaced them
    downloaded()            # which catalog models are pulled into PHI_MODELS_DIR here

The table lives in `phihelpers/data/phi_models.csv` and is parsed once, into typed `Entry`
rows (`entries()`); the pandas views are built from those entries, so the two cannot disagree.
It was compiled from stored copies of public pages and repositories, not live: its `*_source`
columns say where each commit, size and checksum came from. Every GGUF is pinned to a
repository commit (`gguf_revision`), which `pull` downloads from. Where no SHA-256 could be
found, `sha256` is empty and `pull` checks the file against the SHA-256 that Hugging Face
announces for it at download time (the `X-Linked-Etag` of an LFS file) instead.

The server side (`phihelpers.server.models`) reads this module without pandas.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path

CATALOG_FILE = "phi_models.csv"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class UnknownModelError(LookupError):
    """The name is not in the catalog; the message lists the names that are."""


@dataclass(frozen=True)
class Entry:
    """One catalog row, typed; the fields are the CSV's columns, in its order.

    `gguf_*` fields are empty when there is nothing to pull.
    """

    name: str
    model: str
    family: str
    parameters_b: float
    active_parameters_b: float | None
    context_length: int
    modalities: str
    released: str
    licence: str
    weights: str
    offered_today: str
    in_seed: bool
    on_github_models: str
    replaced_by: str
    lifecycle_source: str
    gguf_repo: str
    gguf_file: str
    gguf_revision: str
    revision_source: str
    gguf_quant: str
    gguf_size_bytes: int
    size_exact: bool
    size_source: str
    sha256: str
    sha256_source: str
    aliases: tuple[str, ...]
    notes: str

    @property
    def pullable(self) -> bool:
        return bool(self.gguf_repo and self.gguf_file)

    @property
    def pinned(self) -> bool:
        """True when the GGUF is pinned to a repository commit (40 hex), not a branch."""
        return bool(_COMMIT.match(self.gguf_revision))

    @property
    def local_file(self) -> str:
        """The file name `pull` saves it under: the official model name plus the quantization."""
        return f"{self.model}-{self.gguf_quant}.gguf" if self.pullable else ""

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that picks this model, lower-case: pull name, official name, aliases."""
        return tuple(n.lower() for n in (self.name, self.model, *self.aliases) if n)

    def url(self, endpoint: str = "https://huggingface.co") -> str:
        """Where the GGUF is downloaded from: Hugging Face's `resolve` URL at the pinned commit."""
        if not (self.pullable and self.gguf_revision):
            raise ValueError(f"{self.name} has no GGUF revision to download from")
        base = endpoint.rstrip("/")
        return f"{base}/{self.gguf_repo}/resolve/{self.gguf_revision}/{self.gguf_file}"


def _value(kind: str, text: str):
    """One CSV cell as the type its `Entry` field is annotated with."""
    if kind == "bool":
        return text.strip().lower() == "true"
    if kind == "int":
        return int(text or 0)
    if kind == "float":
        return float(text)
    if kind == "float | None":
        return float(text) if text.strip() else None
    if kind == "tuple[str, ...]":
        return tuple(a.strip() for a in text.split(";") if a.strip())
    return text


def _entry(row: dict[str, str]) -> Entry:
    row = {**row, "sha256": row["sha256"].strip().lower()}
    return Entry(**{f.name: _value(f.type, row[f.name]) for f in fields(Entry)})


@lru_cache(maxsize=1)
def entries() -> tuple[Entry, ...]:
    """All catalog rows as `Entry` objects (no pandas needed). The CSV is parsed here only."""
    text = resources.files("phihelpers").joinpath("data", CATALOG_FILE).read_text("utf-8")
    reader = csv.DictReader(text.splitlines())
    columns, expected = list(reader.fieldnames or ()), [f.name for f in fields(Entry)]
    if columns != expected:
        raise ValueError(f"{CATALOG_FILE} columns {columns} are not Entry's fields {expected}")
    return tuple(_entry(r) for r in reader)


def find(name: str) -> Entry | None:
    """The entry a name picks (pull name, official name or alias; any case), or None."""
    wanted = (name or "").strip().lower()
    for entry in entries():
        if wanted in entry.names:
            return entry
    return None


def get(name: str) -> Entry:
    """Like `find`, but an unknown name raises UnknownModelError listing the pullable names."""
    entry = find(name)
    if entry is None:
        pullable = ", ".join(e.name for e in entries() if e.pullable)
        raise UnknownModelError(
            f"{name!r} is not a Phi model in the catalog. Models you can pull: {pullable}."
        )
    return entry


def local_path(entry: Entry, models_dir: Path) -> Path:
    return Path(models_dir) / entry.local_file


# `pull` writes this record beside a file it verified: its size, SHA-256 and where that came from.
PULL_RECORD = ".sha256.json"


def pull_record(path: Path) -> Path:
    return path.with_name(path.name + PULL_RECORD)


def is_downloaded(entry: Entry, models_dir: Path) -> bool:
    """True when the verified file is in place (a `.part` file is not a download)."""
    return entry.pullable and local_path(entry, models_dir).is_file()


# -- pandas views, for the notebooks ------------------------------------------------------------


def load_catalog():
    """The whole family as a pandas DataFrame: one row per `Entry`, columns as in the CSV,
    plus `pullable` and `gguf_size_gb`. Sizes and parameters are numbers (NaN where empty)."""
    import pandas as pd

    rows = [{**asdict(e), "aliases": ";".join(e.aliases)} for e in entries()]
    frame = pd.DataFrame(rows, columns=[f.name for f in fields(Entry)])
    frame["active_parameters_b"] = frame["active_parameters_b"].astype(float)
    frame["pullable"] = [e.pullable for e in entries()]
    frame["gguf_size_bytes"] = frame["gguf_size_bytes"].where(frame["pullable"]).astype(float)
    frame["gguf_size_gb"] = (frame["gguf_size_bytes"] / 1e9).round(2)
    return frame


def seed_lifecycle():
    """The seed's six GitHub Models names: where they went and what to use instead today."""
    frame = load_catalog()
    seed = frame[frame["in_seed"]]
    return seed[
        ["model", "parameters_b", "context_length", "on_github_models", "replaced_by", "notes"]
    ].reset_index(drop=True)


def downloaded(models_dir: Path | None = None):
    """The pullable models with `downloaded` (True/False) and `path` for this machine."""
    if models_dir is None:
        from .config import load_settings

        models_dir = load_settings().models_dir
    frame = load_catalog()
    frame = frame[frame["pullable"]].copy()
    paths = [local_path(e, models_dir) for e in entries() if e.pullable]  # the frame's order
    frame["downloaded"] = [p.is_file() for p in paths]
    frame["path"] = [str(p) for p in paths]
    return frame[["name", "model", "gguf_quant", "gguf_size_gb", "downloaded", "path"]].reset_index(
        drop=True
    )
