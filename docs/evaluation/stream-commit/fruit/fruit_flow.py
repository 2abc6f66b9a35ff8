"""Fruit request flow per seed: deltas, first-delta step / steps, answer. Options as JSON argv[1]."""
import json, sys, os
import awrs
import awrs.smc.commitment as _C
if os.environ.get("DRAW_POWER"): _C.DRAW_POWER = float(os.environ["DRAW_POWER"])
from awrs.constraints import Regex
from awrs.smc.commitment import STREAMING_POLICY
from awrs.smc.streaming import SettledText
opts = dict(STREAMING_POLICY); opts.update(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
seeds = int(sys.argv[2]) if len(sys.argv) > 2 else 8
model = awrs.load_model(os.environ.get("MODEL", "smollm2-135m"), n_threads=1)
flow = 0; nos = 0
for seed in range(seeds):
    settled = SettledText(model.vocab); steps = [0]; deltas = []
    def on_step(p):
        steps[0] += 1
        d = settled.update(p)
        if d: deltas.append((steps[0], d))
    r = awrs.generate(model, "List three fruits, comma separated.", Regex("[A-Z][a-z]+, [A-Z][a-z]+, [A-Z][a-z]+"),
                      max_tokens=24, particles=8, seed=seed, on_step=on_step, chat=True, **opts)
    ok = len(deltas) > 1 and deltas[0][0] < steps[0]
    flow += ok; nos += r.text is None
    print(seed, "flows" if ok else "LATE ", "NOSAMPLE" if r.text is None else "", f"steps={steps[0]} commits={r.stats.commits}", deltas, repr(r.text), flush=True)
print("flowing", flow, "of", seeds, "nosample", nos, opts, "power", _C.DRAW_POWER)
