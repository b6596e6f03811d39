"""Which GGUF answers a request: the server's default, or a model pulled into PHI_MODELS_DIR.

How a request's `model` is resolved (names compare case-insensitively):

1. no `model`, or the default model's own name  -> the server's default model;
2. a model available here: a catalog model that was pulled (by pull name, official name or
   alias: "phi-4-mini", "Phi-4-mini-instruct", "phi4-mini"), or any other .gguf file in the
   models dir (by its model name, e.g. "Qwen2.5-0.5B-Instruct")  -> that model;
3. a catalog model that could be pulled but is not downloaded here  -> 404 model_not_found,
   saying `python -m phihelpers pull <name>`;
4. anything else (a name from another service, such as the seed's "Phi-3-small-8k-instruct",
   for which no runnable GGUF exists)  -> the default model. The seed's code keeps working,
   and the response's `model` says which model really answered.

The server's default is PHI_LOCAL_MODEL_PATH / `serve --model` (a .gguf path or a catalog
name), else PHI_MODEL if it names a model available here, else the shipped SmolLM2. If
PHI_MODEL names a catalog model that is not downloaded, the server refuses to start and says
how to pull it.

One model is loaded at a time (switching unloads the previous one first, so two models never
need RAM at once); loading happens on the engine thread, inside the model slot, so it never
overlaps a generation. Context: min(PHI_LOCAL_N_CTX, the model's trained context); threads:
PHI_LOCAL_THREADS or all cores but one.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import catalog
from ..config import Settings
from .embedding_model import shipped_gguf
from .engine import Embedder, Engine, ModelFileError, default_model_path, model_name_from_path
from .errors import ApiError

log = logging.getLogger("phihelpers.server")


@dataclass(frozen=True)
class ModelChoice:
    """A model this server can load: the name it answers to and its file."""

    name: str
    path: Path
    n_ctx: int
    names: tuple[str, ...] = ()  # lower-case names that pick it

    def as_dict(self) -> dict:
        return {"id": self.name, "path": str(self.path), "context_window": self.n_ctx}


def not_downloaded_message(entry: catalog.Entry, models_dir: Path | None) -> str:
    where = f" in {models_dir}" if models_dir else ""
    return (
        f"The model '{entry.model}' is in the Phi catalog but not downloaded on this machine"
        f"{where}. Run `python -m phihelpers pull {entry.name}` (about "
        f"{entry.gguf_size_bytes / 1e9:.1f} GB, needs a network), then ask again; or leave "
        "`model` out to use the server's default model."
    )


PULL_RECORD = catalog.PULL_RECORD  # the record `pull` writes beside a verified file


def incomplete(path: Path) -> str | None:
    """Why a GGUF in the models dir is not a complete model file, or None if it is."""
    size = path.stat().st_size
    record = catalog.pull_record(path)
    expected = None
    if record.is_file():
        try:
            expected = int(json.loads(record.read_text())["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return f"its pull record {record.name} cannot be read"
    else:
        entry = next((e for e in catalog.entries() if e.local_file == path.name), None)
        if entry is not None and entry.size_exact:
            expected = entry.gguf_size_bytes
    if expected is not None and size != expected:
        return f"{path.name} is {size:,} bytes, the download is {expected:,}"
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            return f"{path.name} does not start like a GGUF file"
    return None


class ModelRegistry:
    """Name -> GGUF resolution, and the one loaded Engine."""

    def __init__(
        self,
        default: ModelChoice,
        models_dir: Path | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        engine_factory: Callable[..., Engine] = Engine,
    ):
        self.default = default
        self.models_dir = Path(models_dir) if models_dir else None
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.engine_factory = engine_factory
        self.parallel = 1  # answers decoded together (serve --parallel)
        self.kv_tokens: int | None = None  # the shared KV cache's size; None: the engine's rule
        self.engine: Engine | None = None
        self._default_info: dict = {}
        self.embedding_path: Path | None = None  # None: the shipped MiniLM, else the default's
        self.embedding_pooling: str | None = None  # None: the model's own
        self._embedder: Embedder | None = None

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def for_engine(cls, engine: Engine, models_dir: Path | None = None) -> ModelRegistry:
        """A registry around an already loaded engine (its default)."""
        default = ModelChoice(engine.name, Path(engine.path), engine.n_ctx, (engine.name.lower(),))
        registry = cls(default, models_dir, engine.n_ctx, engine.n_threads)
        registry.parallel, registry.kv_tokens = engine.parallel, engine.kv_tokens
        registry.engine = engine
        registry._default_info = engine.info()
        return registry

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        model: str | None = None,
        n_ctx: int | None = None,
        n_threads: int | None = None,
    ) -> ModelRegistry:
        """The registry `serve` uses; raises ModelFileError if the default cannot be served."""
        registry = cls(
            ModelChoice("", Path(), 0),  # replaced below
            settings.models_dir,
            n_ctx or settings.local_n_ctx,
            n_threads or settings.local_threads,
        )
        registry.default = registry._pick_default(
            model or settings.local_model_path, settings.model
        )
        return registry

    def _pick_default(self, explicit: str | None, wanted: str | None) -> ModelChoice:
        if explicit:
            path = Path(explicit).expanduser()
            if path.suffix.lower() == ".gguf" or path.exists() or "/" in explicit:
                return self._choice_for_file(path)
            return self._require(explicit, "PHI_LOCAL_MODEL_PATH / --model")
        if wanted:
            entry = catalog.find(wanted)
            if entry is not None and entry.pullable:
                return self._require(wanted, "PHI_MODEL")
            found = self._available_by_name().get(wanted.lower())
            if found:
                return found
        return self._choice_for_file(default_model_path())

    def _require(self, name: str, setting: str) -> ModelChoice:
        found = self._available_by_name().get(name.lower())
        if found:
            return found
        entry = catalog.find(name)
        if entry is not None and entry.pullable:
            raise ModelFileError(
                f"{setting}={name}: " + not_downloaded_message(entry, self.models_dir)
            )
        raise ModelFileError(
            f"{setting}={name!r} is neither a .gguf file nor a model downloaded in "
            f"{self.models_dir}. Give a path to a .gguf file, or a catalog name you have pulled "
            "(`python -m phihelpers pull --list`)."
        )

    # -- resolution -----------------------------------------------------------------------
    def _ctx_for(self, entry: catalog.Entry | None) -> int:
        trained = entry.context_length if entry else 0
        return min(self.n_ctx, trained) if trained else self.n_ctx

    def _choice_for_file(self, path: Path) -> ModelChoice:
        path = Path(path)
        for entry in catalog.entries():
            if entry.pullable and entry.local_file == path.name:
                return ModelChoice(entry.model, path, self._ctx_for(entry), entry.names)
        name = model_name_from_path(path)
        return ModelChoice(name, path, self.n_ctx, (name.lower(), path.stem.lower()))

    def available(self) -> list[ModelChoice]:
        """The default first, then every complete .gguf in the models dir (a file whose size
        is not what its download recorded, or not a GGUF at all, is not offered)."""
        found = [self.default]
        if self.models_dir and self.models_dir.is_dir():
            for path in sorted(self.models_dir.glob("*.gguf")):
                if path.is_file() and path != self.default.path and not incomplete(path):
                    found.append(self._choice_for_file(path))
        return found

    def _available_by_name(self) -> dict[str, ModelChoice]:
        by_name: dict[str, ModelChoice] = {}
        for choice in reversed(self.available()):  # the default wins a name clash
            for name in (choice.name.lower(), *choice.names):
                by_name[name] = choice
        return by_name

    def resolve(self, requested: str | None) -> ModelChoice:
        """The model a request's `model` picks (see the module docstring); 404 if not pulled."""
        wanted = (requested or "").strip().lower()
        if not wanted or wanted in (self.default.name.lower(), *self.default.names):
            return self.default
        found = self._available_by_name().get(wanted)
        if found:
            return found
        entry = catalog.find(wanted)
        if entry is not None and entry.pullable:
            path = catalog.local_path(entry, self.models_dir) if self.models_dir else None
            why = incomplete(path) if path and path.is_file() else None
            if why:
                raise ApiError(
                    404,
                    "model_incomplete",
                    f"The model '{entry.model}' is downloaded only in part: {why}. Run "
                    f"`python -m phihelpers pull {entry.name}` to finish (or redo) the download.",
                )
            raise ApiError(404, "model_not_found", not_downloaded_message(entry, self.models_dir))
        return self.default

    # -- loading (engine thread only) -----------------------------------------------------
    def loaded(self, choice: ModelChoice | None = None) -> Engine | None:
        """The Engine for `choice` (None: the default) if it is the one loaded now."""
        engine = self.engine
        wanted = choice or self.default
        return engine if engine is not None and Path(engine.path) == wanted.path else None

    def start(self) -> Engine:
        """Load the default model (at server start)."""
        return self.activate(self.default)

    def activate(self, choice: ModelChoice | None = None) -> Engine:
        """The loaded Engine for `choice`, loading it (and unloading another) if needed."""
        choice = choice or self.default
        if self.loaded(choice) is not None:
            return self.engine
        if self.engine is not None:
            log.info("unloading %s to load %s", self.engine.name, choice.name)
            self.engine = None
            gc.collect()  # llama.cpp frees the weights when the Llama object goes
        try:
            engine = self.engine_factory(
                choice.path,
                n_ctx=choice.n_ctx,
                n_threads=self.n_threads,
                parallel=self.parallel,
                kv_tokens=self.kv_tokens,
            )
        except ModelFileError as exc:
            if choice is self.default and not self._default_info:
                raise  # at start-up: `serve` reports it and exits
            raise ApiError(500, "model_load_failed", str(exc)) from None
        engine.name = choice.name
        self.engine = engine
        log.info(
            "loaded %s (%d-token context, %d slots sharing a %d-token cache, %d threads) in %.2f s",
            engine.name,
            engine.n_ctx,
            engine.parallel,
            engine.kv_tokens,
            engine.n_threads,
            engine.load_seconds,
        )
        if choice == self.default:
            self._default_info = engine.info()
        return engine

    def embedder(self) -> Embedder:
        """The model that answers /embeddings, loaded on first use (engine thread only)."""
        if self._embedder is None:
            path, pooling = self._embedding_choice()
            try:
                self._embedder = Embedder(path, pooling, n_threads=self.n_threads)
            except ModelFileError as exc:
                raise ApiError(500, "model_load_failed", str(exc)) from None
            log.info(
                "loaded %s for embeddings (%s pooling, %d dimensions) in %.2f s",
                self._embedder.name,
                self._embedder.pooling,
                self._embedder.dimensions,
                self._embedder.load_seconds,
            )
        return self._embedder

    def _embedding_choice(self) -> tuple[Path, str | None]:
        if self.embedding_path:
            return self.embedding_path, self.embedding_pooling
        shipped = shipped_gguf()  # all-MiniLM-L6-v2, converted once (embedding_model.py)
        if shipped:
            return shipped, self.embedding_pooling  # its own pooling: mean
        return self.default.path, self.embedding_pooling or "last"  # a chat model: last token

    # -- what /info and /v1/models report -------------------------------------------------
    def info(self) -> dict:
        """The default model's info (what a request without `model` gets), plus what's here."""
        info = dict(self._default_info)
        info["models_available"] = [c.name for c in self.available()]
        info["model_loaded"] = self.engine.name if self.engine else None
        return info
