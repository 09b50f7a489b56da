"""The official CLAE SimCLR step in PyTorch, timed like benchmarks/step_time.py.

    pip install torch==2.13.0            # CPU wheel; a benchmark extra, never an adcl dependency
    python benchmarks/torch_reference.py --model resnet18 --image-size 32 --channels 3 --batch 64
    python benchmarks/torch_reference.py --model quickstart
    python benchmarks/torch_reference.py --device cuda --batch 256 --dtype bfloat16  # a GPU

Written from docs/method.md, not from the official code: a ResNet (CIFAR stem) whose
every BatchNorm is a clean/adversarial pair chosen per call, the SimCLR projector, NT-Xent, Adam,
and the official adversarial step: `gen_adv` runs f_adv on x1 (the anchor, detached) and on
x1 + delta (delta = 0, requires grad), takes the input gradient of the loss and steps eps * sign;
then the update runs f(x1), f(x2), f_adv(x_adv): 5 forwards and 2 backwards against the plain
step's 2 and 1. Random inputs; plain and CLAE rounds alternate; the last line printed is one
JSON object with the same keys as step_time.py.
"""

import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet_small": (1, 1, 1, 1),
                 "resnet_tiny": (1, 1)}


class DualBN(nn.Module):
  """Clean BN (momentum 0.1) and adversarial BN (momentum 0.01); `adv` picks one."""

  def __init__(self, channels, state):
    super().__init__()
    self.clean, self.adv, self.state = (nn.BatchNorm2d(channels),
                                        nn.BatchNorm2d(channels, momentum=0.01), state)

  def forward(self, x):
    return self.adv(x) if self.state["adv"] else self.clean(x)


class Block(nn.Module):
  def __init__(self, cin, cout, stride, state):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = DualBN(cout, state)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = DualBN(cout, state)
    self.shortcut = None
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), DualBN(cout, state))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Encoder(nn.Module):
  """ResNet (CIFAR stem) + SimCLR projector; returns unit embeddings [N, D]."""

  def __init__(self, stages, width, channels, projector):
    super().__init__()
    self.state = {"adv": False}
    self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False),
                              DualBN(width, self.state), nn.ReLU())
    layers, cin = [], width
    for stage, blocks in enumerate(stages):
      for index in range(blocks):
        cout = width * 2**stage
        layers.append(Block(cin, cout, 2 if stage > 0 and index == 0 else 1, self.state))
        cin = cout
    self.layers = nn.Sequential(*layers)
    head, d = [], cin
    for i, out in enumerate(projector):
      if i:
        head.append(nn.ReLU())
      head.append(nn.Linear(d, out))
      d = out
    self.head = nn.Sequential(*head)

  def forward(self, x, adv=False):
    self.state["adv"] = adv
    h = self.layers(self.stem(x)).mean(dim=(2, 3))
    return F.normalize(self.head(h), dim=1)


def nt_xent(z1, z2, tau):
  """SimCLR's loss over 2N rows (docs/method.md §1)."""
  z = torch.cat([z1, z2])
  n = z1.shape[0]
  logits = z @ z.T / tau
  logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
  targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
  return F.cross_entropy(logits, targets)


def gen_adv(model, x1, eps, tau):
  """The official two-forward FGSM: anchor f_adv(x1), perturbed f_adv(x1 + delta)."""
  anchor = model(x1, adv=True).detach()
  x = x1.clone().requires_grad_(True)
  loss = nt_xent(anchor, model(x, adv=True), tau)
  (grad,) = torch.autograd.grad(loss, x)  # Input gradient only: no weight gradients.
  return (x1 + eps * grad.sign()).detach()


def make_step(model, optimizer, adversarial, eps=0.03, tau=0.5, alpha=1.0):
  def step(x1, x2):
    if adversarial:
      x_adv = gen_adv(model, x1, eps, tau)
    z1, z2 = model(x1), model(x2)
    loss = nt_xent(z1, z2, tau)
    if adversarial:
      loss = loss + alpha * nt_xent(z1, model(x_adv, adv=True), tau)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss
  return step


def settings(args):
  if args.model == "quickstart":  # configs/quickstart.py
    return dict(stages=ARCHITECTURES["resnet_small"], width=16, channels=1, size=20,
                batch=args.batch or 64, projector=(128, 64), tau=0.2, lr=2e-3)
  return dict(stages=ARCHITECTURES[args.model], width=args.width, channels=args.channels,
              size=args.image_size, batch=args.batch or 64, projector=(512, 64), tau=0.5, lr=3e-4)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet18", choices=[*ARCHITECTURES, "quickstart"])
  parser.add_argument("--width", type=int, default=64)
  parser.add_argument("--image-size", type=int, default=32)
  parser.add_argument("--channels", type=int, default=3)
  parser.add_argument("--batch", type=int, default=0, help="global batch (default 64)")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
  parser.add_argument("--device", default="cpu", help="cpu or cuda")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="bfloat16: autocast (mixed precision, float32 weights)")
  parser.add_argument("--channels-last", action="store_true",
                      help="NHWC memory format for the model and inputs (faster convolutions "
                           "on tensor cores)")
  parser.add_argument("--compile", action="store_true", help="torch.compile the model")
  args = parser.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  s = settings(args)
  torch.manual_seed(0)
  shape = (s["batch"], s["channels"], s["size"], s["size"])  # NCHW, PyTorch's layout.
  device = torch.device(args.device)
  x1, x2 = torch.randn(shape, device=device), torch.randn(shape, device=device)
  memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
  x1, x2 = (x.contiguous(memory_format=memory_format) for x in (x1, x2))
  sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
  autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                            enabled=args.dtype == "bfloat16")
  runs = {}
  for name, adversarial in (("plain", False), ("clae", True)):
    model = Encoder(s["stages"], s["width"], s["channels"], s["projector"]).to(
        device, memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=s["lr"], weight_decay=1e-6)
    if args.compile:  # After the optimizer took the parameters: compiling keeps them.
      model = torch.compile(model)
    runs[name] = make_step(model, optimizer, adversarial, tau=s["tau"])
    with autocast:
      for _ in range(2):  # Warm-up.
        runs[name](x1, x2)
    sync()
  seconds = {"plain": 0.0, "clae": 0.0}
  for round_index in range(args.rounds):
    for name in ("plain", "clae"):
      start = time.perf_counter()
      with autocast:
        for _ in range(args.steps):
          runs[name](x1, x2)
      sync()  # CUDA runs asynchronously: wait for the steps before reading the clock.
      seconds[name] += time.perf_counter() - start
    print(f"round {round_index + 1}/{args.rounds}: plain {seconds['plain']:.2f}s, "
          f"clae {seconds['clae']:.2f}s so far", file=sys.stderr)
  steps = args.steps * args.rounds
  print(json.dumps({
      "framework": f"torch {torch.__version__}", "device": args.device, "dtype": args.dtype,
      "model": args.model, "width": s["width"],
      "image_size": s["size"], "channels": s["channels"], "batch": s["batch"],
      "threads": torch.get_num_threads(), "timed_steps": steps,
      "channels_last": args.channels_last, "compiled": args.compile,
      "plain_images_per_s": round(steps * s["batch"] / seconds["plain"], 2),
      "clae_images_per_s": round(steps * s["batch"] / seconds["clae"], 2),
      "clae_over_plain_time": round(seconds["clae"] / seconds["plain"], 3)}))


if __name__ == "__main__":
  main()
