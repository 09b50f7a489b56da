"""Grids of settings x seeds: `python -m adcl.study --spec configs/studies/NAME.py --workdir DIR`.

  spec     loading a spec file, resolving and checking every (setting, seed) run
  runner   training, evaluating and recording each run (resumable), export
  stats    paired t intervals, verdicts, the Bonferroni level: pure functions
  report   report.md and figures/ from the finished runs
  cost     step-time records, step-time ratios, the plan of a grid's hours
"""
