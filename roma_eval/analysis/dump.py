"""Routing dumps: per sample, its task, its embedding and its routing vector, in one ``.npz`` beside a run's lm-eval
results.  `roma-eval analyze` writes one per run (``DUMP_NAME``); the report's manifold figure (the analogue of
RoMA's Figure 3, arXiv 2511.07419) reads them.  Arrays: ``embedding`` (N×D), ``routing`` (N×R: a sample's routing
weights at its last context token, every analysed layer concatenated) and ``task`` (N strings).  Only numpy: the
report reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roma_eval.errors import RomaEvalError

DUMP_NAME = "routing_analysis.npz"  # beside the run's results_<date>.json and routing_analysis.json


@dataclass(frozen=True)
class RoutingDump:
    embedding: np.ndarray
    routing: np.ndarray
    task: np.ndarray


def dump_bytes(dump: RoutingDump) -> bytes:
    """The ``.npz`` file of ``dump``, compressed."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, embedding=dump.embedding, routing=dump.routing, task=dump.task.astype(str))
    return buffer.getvalue()


def write_routing_dump(path: Path, dump: RoutingDump) -> Path:
    """Write ``dump`` where ``read_routing_dump`` and the report find it (``routing_*.npz`` beside a results JSON)."""
    from roma_eval.storage import write_atomic

    return write_atomic(path, dump_bytes(dump))


def read_routing_dump(path: Path) -> RoutingDump:
    """Read and check one dump; never unpickles (allow_pickle=False)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if missing := [key for key in ("embedding", "routing", "task") if key not in data.files]:
                raise RomaEvalError(f"{path} has no array {', '.join(missing)}; a routing dump needs embedding, "
                                    f"routing and task")
            arrays = {key: data[key] for key in ("embedding", "routing", "task")}
    except (OSError, ValueError) as exc:
        raise RomaEvalError(f"{path} is not a readable .npz routing dump ({exc}); regenerate it or remove it") from None
    n = len(arrays["task"])
    if any(arrays[key].ndim != 2 or len(arrays[key]) != n for key in ("embedding", "routing")):
        raise RomaEvalError(f"{path}: embedding and routing must be 2-D with one row per task label ({n})")
    return RoutingDump(arrays["embedding"].astype(float), arrays["routing"].astype(float), arrays["task"].astype(str))
