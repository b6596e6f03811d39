"""The Phi model family as data: sizes, context, lifecycle, and where a runnable GGUF lives.

    from phihelpers.catalog import load_catalog, seed_lifecycle, downloaded
    load_catalog()          # pandas DataFrame, one row per Phi model
    seed_lifecycle()        # the seed's six Phi-3 names on GitHub Models, and what replaced them
    downloaded()            # which catalog models are pulled into PHI_MODELS_DIR here

The table lives in `phihelpers/data/phi_models.csv`. It was compiled from public pages (model
cards, Hugging Face file listings, GitHub's changelog) read as stored copies, not live: its
`*_source` columns say where each size and checksum came from. Where no SHA-256 was published
in a page we could read, `sha256` is empty and `pull` checks the file against the SHA-256 that
Hugging Face announces for it at download time (the `X-Linked-Etag` of an LFS file) instead.

The server side (`phihelpers.server.models`) reads this module without pandas.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

CATALOG_FILE = "phi_models.csv"


class UnknownModelError(LookupError):
    """The name is not in the catalog; the message lists the names that are."""


@dataclass(frozen=True)
class Entry:
    """One catalog row, typed. `gguf_*` fields are empty when there is nothing to pull."""

    name: str
    model: str
    family: str
    parameters_b: float
    context_length: int
    modalities: str
    released: str
    licence: str
    in_seed: bool
    on_github_models: str
    replaced_by: str
    aliases: tuple[str, ...]
    gguf_repo: str = ""
    gguf_file: str = ""
    gguf_revision: str = ""
    gguf_quant: str = ""
    gguf_size_bytes: int = 0
    size_exact: bool = False
    size_source: str = ""
    sha256: str = ""
    sha256_source: str = ""
    notes: str = ""

    @property
    def pullable(self) -> bool:
        return bool(self.gguf_repo and self.gguf_file)

    @property
    def local_file(self) -> str:
        """The file name `pull` saves it under: the official model name plus the quantization."""
        return f"{self.model}-{self.gguf_quant}.gguf" if self.pullable else ""

    @property
    def names(self) -> tuple[str, ...]:
        """Every name that picks this model, lower-case: pull name, official name, aliases."""
        return tuple(n.lower() for n in (self.name, self.model, *self.aliases) if n)

    def url(self, endpoint: str = "https://huggingface.co") -> str:
        """Where the GGUF is downloaded from (Hugging Face's `resolve` URL shape)."""
        return (
            f"{endpoint.rstrip('/')}/{self.gguf_repo}/resolve/{self.gguf_revision or 'main'}/"
            f"{self.gguf_file}"
        )


def _bool(text: str) -> bool:
    return text.strip().lower() == "true"


def _entry(row: dict[str, str]) -> Entry:
    return Entry(
        name=row["name"],
        model=row["model"],
        family=row["family"],
        parameters_b=float(row["parameters_b"]),
        context_length=int(row["context_length"]),
        modalities=row["modalities"],
        released=row["released"],
        licence=row["licence"],
        in_seed=_bool(row["in_seed"]),
        on_github_models=row["on_github_models"],
        replaced_by=row["replaced_by"],
        aliases=tuple(a.strip() for a in row["aliases"].split(";") if a.strip()),
        gguf_repo=row["gguf_repo"],
        gguf_file=row["gguf_file"],
        gguf_revision=row["gguf_revision"],
        gguf_quant=row["gguf_quant"],
        gguf_size_bytes=int(row["gguf_size_bytes"] or 0),
        size_exact=_bool(row["size_exact"]),
        size_source=row["size_source"],
        sha256=row["sha256"].lower(),
        sha256_source=row["sha256_source"],
        notes=row["notes"],
    )


def _rows() -> list[dict[str, str]]:
    text = resources.files("phihelpers").joinpath("data", CATALOG_FILE).read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


@lru_cache(maxsize=1)
def entries() -> tuple[Entry, ...]:
    """All catalog rows as `Entry` objects (no pandas needed)."""
    return tuple(_entry(r) for r in _rows())


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


def is_downloaded(entry: Entry, models_dir: Path) -> bool:
    """True when the verified file is in place (a `.part` file is not a download)."""
    return entry.pullable and local_path(entry, models_dir).is_file()


# -- pandas views, for the notebooks ------------------------------------------------------------


def load_catalog():
    """The whole family as a pandas DataFrame (one row per model, columns as in the CSV)."""
    import pandas as pd

    frame = pd.DataFrame(_rows())
    for column in ("parameters_b", "active_parameters_b", "gguf_size_bytes"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["context_length"] = frame["context_length"].astype(int)
    for column in ("in_seed", "size_exact"):
        frame[column] = frame[column].str.lower().eq("true")
    frame["pullable"] = frame["gguf_repo"].ne("") & frame["gguf_file"].ne("")
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
    by_name = {e.name: e for e in entries()}
    paths = [local_path(by_name[n], models_dir) for n in frame["name"]]
    frame["downloaded"] = [p.is_file() for p in paths]
    frame["path"] = [str(p) for p in paths]
    return frame[["name", "model", "gguf_quant", "gguf_size_gb", "downloaded", "path"]].reset_index(
        drop=True
    )
