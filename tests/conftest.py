import os
import sys
from pathlib import Path

# Tests run on the CPU with a fixed number of host threads; no GPU preallocation games.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
