"""The MoE routing seam: RoMA, C3PO and the oracle read and change routing only through here."""

from roma_eval.routing.arch import (
    SPECS, ArchSpec, as_positions, last_context_positions, resolve_layers, routers, spec_for,
)
from roma_eval.routing.probe import probe_routing, record_routing
from roma_eval.routing.steer import MODES, steer_routing

__all__ = [
    "SPECS", "ArchSpec", "MODES", "as_positions", "last_context_positions", "probe_routing", "record_routing",
    "resolve_layers", "routers", "spec_for", "steer_routing",
]
