"""What every trained method shares and that is no method itself: the training budget and its defaults
(``budget.py``), the LR and λ schedules (``schedule.py``) and the loop's bookkeeping (``loop.py``: samples, epoch
order, resume point, non-finite checks, log and progress).  Nothing here imports ``roma_eval.methods``: the methods
build on it.
"""
