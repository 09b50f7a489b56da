"""A process and its descendants (Grain's workers, a command's children), read from /proc."""

import os


def tree(pid: int) -> list:
  """`pid` and the pids of all its descendants alive now."""
  children = {}
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          parent = int(f.read().rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
      except (OSError, IndexError, ValueError):
        pass  # A process that ended while being read.
  found, todo = [], [pid]
  while todo:
    current = todo.pop()
    found.append(current)
    todo += children.get(current, [])
  return found


def rss_mb(pid: int) -> float:
  """Resident memory (VmRSS) of `pid` and every descendant, MB."""
  total = 0
  for current in tree(pid):
    try:
      with open(f"/proc/{current}/status") as f:
        total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    except (OSError, StopIteration):
      pass
  return total / 1024


def cpu_s(pid: int) -> float:
  """CPU seconds (user + system) `pid` and its live descendants have used so far."""
  ticks = os.sysconf("SC_CLK_TCK")
  total = 0
  for current in tree(pid):
    try:
      with open(f"/proc/{current}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
      total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat.
    except (OSError, IndexError, ValueError):
      pass
  return total / ticks
