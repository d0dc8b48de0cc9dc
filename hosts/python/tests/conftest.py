import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RELAY_BINARY = os.environ.get("RELAY_BINARY", str(Path(__file__).resolve().parents[3] / "target/release/agent-relay"))
FAULTS_DIR = Path(os.environ.get("RELAY_FAULTS_DIR", Path(__file__).resolve().parents[3] / "target/tmp/python-host-faults"))
