"""Candidate exploration: one warm-up-stable trunk, a training state saved where each candidate's decay starts.
`ensure_model(candidate)` then resumes from it (bit-identical to a straight run of the candidate's recipe)."""
import sys
import time
from dataclasses import replace

from roma_eval.storage import save_training_state
from roma_eval.toy import cache
from roma_eval.toy.config import ToyConfig
from roma_eval.toy.pretrain import pretrain

lengths = [int(x) for x in sys.argv[1].split(",")]
base = ToyConfig()
cands = {T: replace(base, train=replace(base.train, steps=T)) for T in lengths}
trunk = cands[max(lengths)]
D = base.train.decay_steps
branch = {T - D: c for T, c in cands.items()}

def on_step(done, model, optimizer, state):
    if done in branch:
        c = branch[done]
        target = cache.model_dir(c)
        partial = target.parent / f".{target.name}.partial"
        save_training_state(partial, model.state_dict(), optimizer, {**state, "config": c.key()})
        print(f"{time.strftime('%H:%M:%S')} saved branch for steps={c.train.steps} at {done}: {partial}", flush=True)
    if done % 100 == 0:
        print(f"{time.strftime('%H:%M:%S')} step {done} loss {sum(state['losses'][-20:])/20:.3f}", flush=True)

pretrain(trunk, progress=False, stop_after=max(branch), on_step=on_step)
print("trunk done", flush=True)
