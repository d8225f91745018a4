"""The numbers derived from a record, computed once for every rule and every output.

Layering: record → traces → view → analyze → report → cli. Rules (``analyze``) and renderers
(``report``, ``diff``) read step times, GPU busy shares, input waits and headline figures from
here, so the same quantity is never computed twice and a page never contradicts itself.
"""
