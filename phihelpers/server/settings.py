"""The server's settings: one typed model, from which `serve`'s command line is generated.

Each option, its default, its rule and its help text are written once, here:

    ServeSettings.from_environment(**given)    PHI_LOCAL_* defaults, then the given values
    add_arguments(parser)                     the `serve` flags, generated from the fields
    ServeSettings.from_arguments(namespace)   what `python -m phihelpers serve ...` was asked
    settings.command_line()                   the flags that reproduce these settings

The API key is a setting too, but never a flag (a command line is visible to every user of the
machine in `ps`): it travels in the environment as PHI_LOCAL_API_KEY.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..config import (
    DEFAULT_LOCAL_HOST,
    DEFAULT_LOCAL_PORT,
    DEFAULT_N_CTX,
    ConfigError,
    load_settings,
)
from .limits import LimitSettings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeSettingsError(ConfigError):
    """A server setting is out of range; the message names the flag and its rule."""


def _rule(text: str) -> dict:
    """The sentence shown when a value breaks the field's constraint."""
    return {"rule": text}


class ServeSettings(BaseModel):
    """Everything `python -m phihelpers serve` can be told."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(DEFAULT_LOCAL_HOST, description="address to bind (PHI_LOCAL_HOST)")
    port: int = Field(
        DEFAULT_LOCAL_PORT,
        ge=0,
        le=65535,
        description="port (PHI_LOCAL_PORT; 0 = any free port)",
        json_schema_extra=_rule("must be a TCP port (0-65535)"),
    )
    model: str | None = Field(
        None,
        description="GGUF file or pulled catalog name (PHI_LOCAL_MODEL_PATH; default SmolLM2)",
    )
    n_ctx: int = Field(
        DEFAULT_N_CTX,
        ge=64,
        description="context window in tokens (PHI_LOCAL_N_CTX)",
        json_schema_extra=_rule("must be at least 64 tokens"),
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for generating (PHI_LOCAL_THREADS; default all cores but one)",
        json_schema_extra=_rule("must be at least 1"),
    )
    parallel: int | None = Field(
        None,
        ge=1,
        le=256,
        description="answers decoded together, each in its own slot (PHI_LOCAL_PARALLEL; "
        "default 8 per core, at most 16; 1 = one at a time)",
        json_schema_extra=_rule("must be between 1 and 256"),
    )
    kv_cache_tokens: int | None = Field(
        None,
        ge=64,
        description="tokens the slots' shared KV cache holds (default 512 per slot, at least "
        "--n-ctx, at most a quarter of the free memory)",
        json_schema_extra=_rule("must be at least 64"),
    )
    state_dir: Path | None = Field(
        None, description="where server.json and server.log live (PHI_STATE_DIR)"
    )
    max_queue: int = Field(
        LimitSettings.max_queue,
        ge=0,
        description="requests that may wait while every slot is answering (then 429)",
        json_schema_extra=_rule("must not be negative"),
    )
    rate_limit_rpm: int = Field(
        0,
        ge=0,
        description="requests per window per key (0 = no limit)",
        json_schema_extra=_rule("must not be negative"),
    )
    rate_limit_window: float = Field(
        LimitSettings.window_seconds,
        gt=0,
        description="seconds the --rate-limit-rpm count covers (shorter for lessons)",
        json_schema_extra=_rule("must be a positive number of seconds"),
    )
    rate_limit_concurrency: int = Field(
        0,
        ge=0,
        description="concurrent requests per key (0 = no limit)",
        json_schema_extra=_rule("must not be negative"),
    )
    default_max_tokens: int = Field(
        1024,
        ge=1,
        description="answer length cap for requests that set no max_tokens (hosted services "
        "cap too: a small model that never stops would fill the whole context)",
        json_schema_extra=_rule("must be at least 1"),
    )
    max_body_bytes: int = Field(
        1_000_000,
        ge=1024,
        description="largest request body accepted (then 413)",
        json_schema_extra=_rule("must be at least 1024"),
    )
    request_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a connection has to send its whole request (then it is closed)",
        json_schema_extra=_rule("must be a positive number of seconds"),
    )
    max_connections: int = Field(
        128,
        ge=1,
        description="open connections at most; more are closed at once",
        json_schema_extra=_rule("must be at least 1"),
    )
    embedding_model: str | None = Field(
        None,
        description="GGUF file that answers /embeddings (default: the shipped all-MiniLM-L6-v2, "
        "else the chat model's file)",
    )
    embedding_pooling: typing.Literal["last", "mean", "cls"] | None = Field(
        None,
        description="how token vectors become one (default: the model's own; last for a chat "
        "model)",
    )
    allowed_host: tuple[str, ...] = Field(
        (),
        description="also answer requests addressed to this host name (repeatable), e.g. a "
        "forwarded address; loopback names always work",
    )
    log_prompts: bool = Field(False, description="log each prompt (off by default)")
    access_log: bool = Field(False, description="log every request line")
    cors_origin: tuple[str, ...] = Field((), description="allow this browser origin (repeatable)")
    content_filter_phrase: str = Field(
        "", description="refuse prompts with this phrase the way Azure's content filter does"
    )
    keys_file: Path | None = Field(
        None,
        description="CSV of attendee keys, each its own limits (python -m phihelpers keys new); "
        "re-read when it changes",
    )
    api_key: str = Field(
        "", repr=False, exclude=True, description="PHI_LOCAL_API_KEY (environment only)"
    )

    @field_validator("keys_file")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """A keys file is named absolutely, so a server started elsewhere finds it too."""
        return path.expanduser().absolute() if path else path

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, **values) -> ServeSettings:
        """Validated settings; a value out of range raises ServeSettingsError naming its flag."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ServeSettingsError(_describe(cls, exc)) from None

    @classmethod
    def from_environment(
        cls, env: typing.Mapping[str, str] | None = None, **given
    ) -> ServeSettings:
        """Defaults from PHI_LOCAL_* (via phihelpers.config), overridden by `given`."""
        s = load_settings(env=env)
        base = {
            "host": s.local_host,
            "port": s.local_port,
            "model": s.local_model_path,
            "n_ctx": s.local_n_ctx,
            "threads": s.local_threads,
            "parallel": s.local_parallel,
            "state_dir": s.state_dir,
            "api_key": s.local_api_key,
        }
        return cls.build(**{**base, **{k: v for k, v in given.items() if v is not None}})

    @classmethod
    def from_arguments(cls, namespace: argparse.Namespace) -> ServeSettings:
        """The settings a parsed `serve` command line asks for (flags given win)."""
        given = {k: v for k, v in vars(namespace).items() if k in cls.model_fields}
        return cls.from_environment(**given)

    # -- using ------------------------------------------------------------------------------
    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK

    @property
    def limits(self) -> LimitSettings:
        return LimitSettings(
            max_queue=self.max_queue,
            slots=self.parallel or 1,
            requests_per_minute=self.rate_limit_rpm,
            concurrent_per_key=self.rate_limit_concurrency,
            window_seconds=self.rate_limit_window,
        )

    def command_line(self) -> list[str]:
        """`serve` flags for the settings given explicitly (never the key); the rest the server
        takes from its environment, as `serve` does."""
        args: list[str] = []
        for name, value in self.model_dump(include=self.model_fields_set).items():
            flag = _flag(name)
            if value is None or value is False or value == () or value == "":
                continue
            if value is True:
                args.append(flag)
            elif isinstance(value, tuple):
                for item in value:
                    args += [flag, str(item)]
            else:
                args += [flag, str(value)]
        return args


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _describe(cls: type[ServeSettings], exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        field = cls.model_fields.get(name)
        extra = (
            field.json_schema_extra if field and isinstance(field.json_schema_extra, dict) else {}
        )
        rule = extra.get("rule") or err["msg"].lower()
        shown = "PHI_LOCAL_API_KEY" if name == "api_key" else _flag(name)
        parts.append(f"{shown} {rule} (got {err.get('input')!r})")
    return "; ".join(parts) + "."


def _arg_type(annotation) -> type:
    """int | None -> int; Path | None -> Path; tuple[str, ...] -> str."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _arg_type(args[0])
    if typing.get_origin(annotation) is tuple:
        return args[0]
    return annotation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `serve` flags, one per field. Unset flags stay out of the namespace (SUPPRESS), so
    the environment's value or the field's default applies."""
    for name, field in ServeSettings.model_fields.items():
        if field.exclude:  # the key: environment only
            continue
        kind = _arg_type(field.annotation)
        default = "" if field.default in (None, (), "", False) else f" (default {field.default})"
        options: dict = {"help": f"{field.description}{default}", "default": argparse.SUPPRESS}
        if kind is bool:
            options["action"] = "store_true"
        elif typing.get_origin(kind) is typing.Literal:
            options |= {"choices": typing.get_args(kind), "type": str}
        elif typing.get_origin(field.annotation) is tuple:
            options |= {"action": "append", "type": kind}
        else:
            options["type"] = kind
        parser.add_argument(_flag(name), **options)
