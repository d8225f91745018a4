"""What a record may say about the machine and the command line.

Reports travel: into pull-request comments, CI artifacts, chat. By default a record keeps the
script's file name but not its folder (a home directory names a person), the host only as a
short hash (ranks on one host still group together), and the command line with the values of
secret-looking flags replaced by ``***``. ``torchdiag.profile(redact=False)`` keeps everything.
"""

from __future__ import annotations

import os
import re

# The host's short hash lives below the capture, where a reader also compares it with this host.
from torchdiag.host import host_label as host_label
from torchdiag.sanitize import safe_text

REDACTED = "***"
# Flag names that carry credentials: --api-key, --wandb_api_key, --hf-token, --password,
# --secret, --auth, --credentials, --private-key ...
_SECRET_FLAG = re.compile(
    r"(^|[-_.])(key|apikey|token|secret|passw(or)?d|pwd|auth|authorization|credentials?|cookie"
    r"|session|signature)($|[-_.])",
    re.IGNORECASE,
)
# A bare value that looks like a credential whatever flag it follows (sk-..., ghp_..., hf_...).
_SECRET_VALUE = re.compile(
    r"^(sk|pk|rk|ghp|gho|ghs|github_pat|hf|xox[abp]|glpat)[-_][A-Za-z0-9_\-]{8,}$"
)


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with the script reduced to its file name and secret values replaced.

    Covers ``--api-key VALUE``, ``--api-key=VALUE``, ``api_key=VALUE`` (Hydra-style overrides)
    and values that look like well-known token formats on their own.
    """
    out: list[str] = []
    hide_next = False
    for i, arg in enumerate(argv):
        arg = safe_text(arg)
        if i == 0:
            out.append(os.path.basename(arg) or arg)
            continue
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if eq and _SECRET_FLAG.search(name.lstrip("-+~")):
            out.append(f"{name}={REDACTED}")
        elif arg.startswith("-") and _SECRET_FLAG.search(arg.lstrip("-")):
            out.append(arg)
            hide_next = True
        elif _SECRET_VALUE.match(arg):
            out.append(REDACTED)
        else:
            out.append(arg)
    return out
