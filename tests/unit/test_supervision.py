"""An exception inside an actor ends the process with a logged reason (docs/architecture.md 3)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_failing_actor_ends_the_process_with_its_reason():
    script = textwrap.dedent("""
        import logging, sys, time
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        from raftkv.actors.supervision import SupervisedActor

        class Broken(SupervisedActor):
            def on_receive(self, msg):
                raise RuntimeError("disk on fire: " + msg)

        ref = Broken.start()
        ref.tell("apply")          # a tell: pykka alone would stop the actor and keep the process
        time.sleep(30)              # the process must not get here alive
        print("zombie")
    """)
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert p.returncode == 70
    assert "zombie" not in p.stdout
    assert "actor Broken failed" in p.stderr and "disk on fire: apply" in p.stderr
