"""The paper's experiment as resumable stages over one base model (stages.py): base, Router Tuning, RoMA,
the oracle, C3PO, then the report.  `roma-eval reproduce` runs it on any supported checkpoint with the
paper's suites (roma_paper, roma_paper_train); `roma-eval demo` runs it on the embedded toy world."""

from roma_eval.pipeline.experiment import Experiment, timed
from roma_eval.pipeline.stages import STAGES, check_methods, report_stage

__all__ = ["Experiment", "STAGES", "check_methods", "report_stage", "timed"]
