"""Suite-wide settings: the hypothesis profiles, chosen with ``HYPOTHESIS_PROFILE``.

* ``ci`` (the default; tools/test and .ci/run): 300 examples per property and hypothesis' own
  200 ms deadline, so the whole suite stays at a few minutes.
* ``fuzz``: 10,000 examples per property and no deadline, for a long hunt on a quiet machine:
  ``HYPOTHESIS_PROFILE=fuzz .venv/bin/python -m pytest tests/unit``.

A property takes its example count from the profile; it pins a smaller ``max_examples`` of its
own only when each example is costly (a real handshake, say). Both profiles print the
reproduction blob of a failure, so a ``ci`` failure can be replayed with ``@reproduce_failure``.

This module is loaded by pytest before any test module is imported, which matters: a
``@settings(...)`` decorator copies the profile that is active when it is created.
"""

from __future__ import annotations

import os

from hypothesis import settings

# Both start from hypothesis' "default" profile, not the active one: hypothesis itself switches
# to its built-in "ci" profile (derandomized, no deadline) when $CI is set, and the same
# HYPOTHESIS_PROFILE should mean the same settings everywhere.
_BASE = settings.get_profile("default")
settings.register_profile("ci", _BASE, max_examples=300, print_blob=True)
settings.register_profile("fuzz", _BASE, max_examples=10_000, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
