"""Shared pytest configuration: hypothesis profiles.

"ci" (chosen when the CI environment variable is set) is derandomized so that CI runs are
reproducible; "dev" explores more examples with fresh randomness each run. Deadlines are off
in both: virtual-network tests do real TLS handshakes whose cost varies with machine load.
"""

import os

from hypothesis import settings

settings.register_profile("ci", deadline=None, max_examples=50, derandomize=True)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
