import os
from pathlib import Path

# Captured graphs are cached on disk; keep the tests' cache inside the checkout (git-ignored).
os.environ.setdefault("MTIASIM_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache" / "mtiasim"))
