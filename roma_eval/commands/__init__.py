"""One module per `roma-eval` verb: ``add_arguments(parser)`` and ``run(args) -> int``."""
