"""Where a CLAE step's time goes: each part compiled and timed on its own, with XLA's FLOPs.

    python benchmarks/profile_step.py --model resnet18 --steps 3
    python benchmarks/profile_step.py --model quickstart --steps 20

Parts (same model, batch and random inputs as benchmarks/step_time.py):
  forward        one training-mode forward of a batch (clean BN)
  generation     the attack: one forward with the adversarial BN and the gradient with respect
                 to the input only (no filter gradients), as in the step
  objective_plain   value and parameter gradient of L(f(x1), f(x2)): 2 forwards + backward
  objective_clae    the same with the adversarial term: 3 forwards + backward
  step_plain, step_clae   the whole compiled steps (objective + optimiser, + generation)

The FLOP ratio step_clae / step_plain is what the attack costs at equal efficiency; a measured
time ratio below it means the added passes ran faster per FLOP than the plain step. Prints a
table and, last, one JSON object.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from adcl import build, cli, losses, step as step_lib
import step_time  # benchmarks/step_time.py: the same configs.


def compiled_timer(function, *args):
  """(GFLOP by XLA's cost analysis, seconds per call) of jit(function)(*args)."""
  compiled = jax.jit(function).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  jax.block_until_ready(compiled(*args))  # Warm-up.
  return float(cost.get("flops", 0.0)) / 1e9, compiled


def main():
  cli.prepare_jax()  # As the commands do, before jax starts.
  args = step_time.parse_model_arguments(__doc__.splitlines()[0])
  config = step_time.build_config(args)
  config.adv.enabled = True
  mesh = step_lib.data_mesh()
  channels, size = args.channels, config.data.image_size
  plain_config = config.copy_and_resolve_references()
  plain_config.adv.enabled = False
  trainers = {name: build.trainer(c, (size, size, channels), 1000, 100000, mesh)
              for name, c in (("step_plain", plain_config), ("step_clae", config))}
  model = trainers["step_clae"].model
  state = trainers["step_clae"].init_state()
  rng = np.random.default_rng(0)
  shape = (args.batch, size, size, channels)
  x1, x2 = (jax.device_put(jnp.asarray(rng.normal(size=shape), jnp.float32),
                           NamedSharding(mesh, P("data"))) for _ in range(2))
  forward = step_lib.make_forward(model)
  loss_fn, tau, attack = losses.get(config.loss.name), config.loss.temperature, build.attack(
      config, channels)
  objective = step_lib.make_objective(forward, loss_fn, tau, attack.alpha)
  x_adv = x1 + 0.01

  def generation(params, stats, x):
    return step_lib.adversarial_view(forward, params, stats, x, state.rng, attack, loss_fn,
                                     tau)[0]

  def parameter_grad(x_adv_or_none):
    return lambda p, s, a, b: jax.grad(lambda q: objective(q, s, a, b, x_adv_or_none)[0])(p)

  steps = {name: trainer.train_step for name, trainer in trainers.items()}
  batch = {"view1": x1, "view2": x2}
  parts = {
      "forward": (lambda p, s, x: forward(p, s, x, False)[0], (state.params, state.batch_stats, x1)),
      "generation": (generation, (state.params, state.batch_stats, x1)),
      "objective_plain": (parameter_grad(None), (state.params, state.batch_stats, x1, x2)),
      "objective_clae": (lambda p, s, a, b: jax.grad(
          lambda q: objective(q, s, a, b, x_adv)[0])(p), (state.params, state.batch_stats, x1, x2)),
  }
  timers = {name: compiled_timer(f, *a) for name, (f, a) in parts.items()}
  seconds = {name: 0.0 for name in [*timers, *steps]}
  gflop = {name: g for name, (g, _) in timers.items()}
  step_states = {}
  for name, train_step in steps.items():
    compiled = train_step.lower(state, batch).compile()
    cost = compiled.cost_analysis()
    gflop[name] = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]) / 1e9
    fresh = jax.tree.map(jnp.copy, state)  # The step donates its state.
    fresh, _ = compiled(fresh, batch)
    # Wait for the warm-up step: left running, it was timed as part of the first part below.
    jax.block_until_ready(fresh)
    step_states[name] = (compiled, fresh)
  for round_index in range(args.rounds):  # Alternate the parts so that noise hits all alike.
    for name, (_, compiled) in timers.items():
      start = time.perf_counter()
      for _ in range(args.steps):
        out = compiled(*parts[name][1])
      jax.block_until_ready(out)
      seconds[name] += time.perf_counter() - start
    for name, (compiled, current) in step_states.items():
      start = time.perf_counter()
      for _ in range(args.steps):
        current, metrics = compiled(current, batch)
      jax.block_until_ready(metrics)
      step_states[name] = (compiled, current)
      seconds[name] += time.perf_counter() - start
    print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
  calls = args.steps * args.rounds
  ms = {k: 1e3 * v / calls for k, v in seconds.items()}
  print("| part | ms | GFLOP | GFLOP/s |\n|---|---|---|---|")
  for name in seconds:
    print(f"| {name} | {ms[name]:.1f} | {gflop[name]:.1f} | {gflop[name] / ms[name] * 1e3:.1f} |")
  result = {"model": args.model, "batch": args.batch, "image_size": size,
            "calls": calls,
            "ms": {k: round(v, 2) for k, v in ms.items()},
            "gflop": {k: float(f"{v:.4g}") for k, v in gflop.items()},  # 4 digits.
            "clae_over_plain_time": round(ms["step_clae"] / ms["step_plain"], 3),
            "clae_over_plain_flops": round(gflop["step_clae"] / gflop["step_plain"], 3)}
  print(json.dumps(result))


if __name__ == "__main__":
  main()
