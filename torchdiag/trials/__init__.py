"""``torchdiag try``: what a fix really saves, measured by rerunning the script with it.

:mod:`~torchdiag.trials.compare` turns the records of a baseline and of the runs with a fix
into a :class:`~torchdiag.record.MeasuredFix` (speedup with its interval, from the same
comparison ``torchdiag diff`` makes; memory peak; whether the loss stayed close);
:mod:`~torchdiag.trials.auto` picks the fixes behind a baseline's own findings. Running the
processes is the command line's job (:mod:`torchdiag.cli.trial`).
"""
