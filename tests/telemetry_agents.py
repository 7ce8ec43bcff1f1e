"""The traced chain's agents for the launcher (one OS process each); names from TELEMETRY_TEST_UID."""
from __future__ import annotations

import os

from microagent import DEFAULT_CATALOG

from .telemetry_chain import chain

_CHAIN = chain(DEFAULT_CATALOG, os.environ['TELEMETRY_TEST_UID'], marker_dir=os.environ['TELEMETRY_TEST_DIR'])
Front = _CHAIN.front
Worker = _CHAIN.worker
Pricer = _CHAIN.pricer
