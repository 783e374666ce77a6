"""The MoE routing seam: RoMA, C3PO and the oracle read and change routing only through here."""

from roma_eval.routing.arch import (
    SPECS,
    ArchSpec,
    decoder_layers,
    layer_of_parameter,
    num_experts,
    resolve_layers,
    router_fingerprint,
    router_parameter_names,
    router_weights,
    routers,
    selectors,
    spec_for,
)
from roma_eval.routing.families import REFUSED
from roma_eval.routing.positions import (
    as_positions,
    last_context_positions,
    token_positions,
    token_rows,
)
from roma_eval.routing.probe import probe_routing, record_routing
from roma_eval.routing.steer import MODES, steer_routing

__all__ = [
    "MODES", "REFUSED", "SPECS", "ArchSpec", "as_positions", "decoder_layers", "last_context_positions",
    "layer_of_parameter", "num_experts", "probe_routing", "record_routing", "resolve_layers", "router_fingerprint",
    "router_parameter_names", "router_weights", "routers", "selectors", "spec_for", "steer_routing",
    "token_positions", "token_rows",
]
