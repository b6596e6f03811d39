"""The server's model registry: which GGUF a request's `model` picks, and one model at a time.

Resolution only looks at names and files, so a fake downloaded file (a GGUF header and the
record `pull` writes beside it) is enough for it; loading uses the real engine on the shipped GGUF (a symlink stands in for a second
model, so switching really unloads one llama.cpp model and loads another).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phihelpers.config import load_settings
from phihelpers.server.engine import ModelFileError, default_model_path
from phihelpers.server.errors import ApiError
from phihelpers.server.models import PULL_RECORD, ModelChoice, ModelRegistry

SHIPPED = default_model_path()


def registry(models_dir: Path, n_ctx: int = 4096) -> ModelRegistry:
    default = ModelChoice("SmolLM2-135M-Instruct", SHIPPED, n_ctx, ("smollm2-135m-instruct",))
    return ModelRegistry(default, models_dir, n_ctx=n_ctx, n_threads=2)


def pulled(path: Path, size: int = 64) -> Path:
    """A stand-in for a pulled GGUF: a GGUF header, padded, and the record `pull` writes."""
    path.write_bytes(b"GGUF" + b"\0" * (size - 4))
    path.with_name(path.name + PULL_RECORD).write_text(json.dumps({"size": size}))
    return path


def test_no_model_or_an_unknown_one_gets_the_default(tmp_path):
    reg = registry(tmp_path)
    for asked in (None, "", "smollm2-135m-instruct", "Phi-3-small-8k-instruct", "gpt-4o"):
        assert reg.resolve(asked) == reg.default


def test_a_pulled_catalog_model_answers_to_all_its_names(tmp_path):
    pulled(tmp_path / "Phi-4-mini-instruct-Q4_K_M.gguf")
    reg = registry(tmp_path)
    for asked in ("phi-4-mini", "PHI4-MINI", "Phi-4-mini-instruct"):
        choice = reg.resolve(asked)
        assert choice.name == "Phi-4-mini-instruct"
        assert choice.path == tmp_path / "Phi-4-mini-instruct-Q4_K_M.gguf"
    assert [c.name for c in reg.available()] == ["SmolLM2-135M-Instruct", "Phi-4-mini-instruct"]


def test_context_is_the_smaller_of_setting_and_training(tmp_path):
    pulled(tmp_path / "Phi-4-Q4_K_M.gguf")
    assert registry(tmp_path, n_ctx=4096).resolve("phi-4").n_ctx == 4096
    assert registry(tmp_path, n_ctx=100_000).resolve("phi-4").n_ctx == 16384  # trained: 16K


def test_a_catalog_model_not_pulled_is_a_404_that_says_how_to_pull(tmp_path):
    (tmp_path / "Phi-4-mini-instruct-Q4_K_M.gguf.part").write_bytes(b"")  # not finished
    with pytest.raises(ApiError) as err:
        registry(tmp_path).resolve("Phi-4-mini-instruct")
    assert err.value.status == 404 and err.value.code == "model_not_found"
    assert "python -m phihelpers pull phi-4-mini" in str(err.value.message)


def test_any_other_gguf_in_the_models_dir_is_served_by_its_name(tmp_path):
    pulled(tmp_path / "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")
    assert registry(tmp_path).resolve("qwen2.5-0.5b-instruct").name == "Qwen2.5-0.5B-Instruct"


def test_settings_pick_the_default(tmp_path):
    pulled(tmp_path / "Phi-4-mini-instruct-Q4_K_M.gguf")
    env = {"PHI_MODELS_DIR": str(tmp_path)}
    assert ModelRegistry.from_settings(load_settings(env)).default.path == SHIPPED
    picked = ModelRegistry.from_settings(load_settings({**env, "PHI_MODEL": "phi4-mini"}))
    assert picked.default.name == "Phi-4-mini-instruct"
    seed = ModelRegistry.from_settings(
        load_settings({**env, "PHI_MODEL": "Phi-3-small-8k-instruct"})
    )
    assert seed.default.path == SHIPPED  # nothing to pull for it: the default serves
    with pytest.raises(ModelFileError, match="pull phi-3.5-mini"):
        ModelRegistry.from_settings(load_settings({**env, "PHI_MODEL": "phi-3.5-mini"}))
    by_path = ModelRegistry.from_settings(
        load_settings({**env, "PHI_LOCAL_MODEL_PATH": str(SHIPPED)})
    )
    assert by_path.default.path == SHIPPED


def test_switching_models_keeps_one_loaded(tmp_path):
    (tmp_path / "Tiny-Copy-Q4_1.gguf").symlink_to(SHIPPED)
    reg = registry(tmp_path, n_ctx=512)
    first = reg.start()
    assert reg.engine is first and first.name == "SmolLM2-135M-Instruct" and first.n_ctx == 512
    second = reg.activate(reg.resolve("tiny-copy"))
    assert second is not first and reg.engine is second and second.name == "Tiny-Copy"
    assert reg.activate(reg.resolve("tiny-copy")) is second  # no reload when already loaded
    info = reg.info()
    assert info["model_name"] == "SmolLM2-135M-Instruct"  # /info: what `model`-less requests get
    assert info["model_loaded"] == "Tiny-Copy" and info["threads"] == 2
    assert info["models_available"] == ["SmolLM2-135M-Instruct", "Tiny-Copy"]


def test_a_file_that_is_not_a_gguf_is_not_offered(tmp_path):
    (tmp_path / "Broken-Q4_0.gguf").write_bytes(b"not a model")
    reg = registry(tmp_path, n_ctx=512)
    assert [c.name for c in reg.available()] == ["SmolLM2-135M-Instruct"]
    assert reg.resolve("broken") == reg.default  # an unknown name: the default answers


@pytest.mark.parametrize("cut", [1, 1000])
def test_a_half_downloaded_catalog_model_is_not_listed_and_names_the_pull(tmp_path, cut):
    path = pulled(tmp_path / "Phi-4-mini-instruct-Q4_K_M.gguf", size=4096)
    with path.open("r+b") as f:
        f.truncate(4096 - cut)  # the file is shorter than its download recorded
    reg = registry(tmp_path)
    assert [c.name for c in reg.available()] == ["SmolLM2-135M-Instruct"]
    with pytest.raises(ApiError) as err:
        reg.resolve("phi-4-mini")
    assert err.value.status == 404 and err.value.code == "model_incomplete"
    assert "python -m phihelpers pull phi-4-mini" in err.value.message


def test_a_catalog_file_without_a_pull_record_must_have_the_catalogs_size(tmp_path):
    (tmp_path / "Phi-3.5-mini-instruct-Q4_K_M.gguf").write_bytes(b"GGUF" + b"\0" * 60)  # 64 B
    reg = registry(tmp_path)
    assert [c.name for c in reg.available()] == ["SmolLM2-135M-Instruct"]
    with pytest.raises(ApiError) as err:
        reg.resolve("phi-3.5-mini")
    assert err.value.code == "model_incomplete" and "pull phi-3.5-mini" in err.value.message
