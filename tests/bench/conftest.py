import sys
from pathlib import Path

# bench/ is a folder of scripts next to the package, not installed with it.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
