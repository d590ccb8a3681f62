"""A storm of appends, flag changes and expunges for the crash test.

Run as ``python -m tests.store.crash_child <maildir> <seed>``.  Every
acknowledged operation is printed (and flushed) only after its Deferred
fired, i.e. after the store said it is on disk:
``A <uid> <sha256>``, ``E <uid>``, ``F <uid> <flag>``; before an expunge its intent,
``e <uid>``, since that one may or may not be done when we are killed.  The parent kills us with
SIGKILL somewhere in the middle.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

from twisted.internet.task import Clock

from mailaccess.store.mailbox import Mailbox, run_synchronously
from mailaccess.store.maildir import to_lf


def main() -> None:
    path, seed = Path(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    results: list[object] = []
    Mailbox.open("INBOX", path, Clock(), lambda: 4242, run_synchronously, folder=False).addBoth(
        results.append
    )
    box = results[0]
    assert isinstance(box, Mailbox), box
    out = sys.stdout
    while True:
        uids = [r.uid for r in box.records()]
        action = rng.random()
        if action < 0.6 or not uids:
            body = rng.randbytes(rng.randint(10, 3000)).hex().encode()
            message = b"Subject: storm\r\n\r\n" + body + b"\r\n"
            fired: list[object] = []
            box.append(message).addBoth(fired.append)
            record = fired[0]
            digest = hashlib.sha256(to_lf(message)).hexdigest()
            out.write(f"A {record.uid} {digest}\n")  # type: ignore[attr-defined]
        elif action < 0.85:
            uid = rng.choice(uids)
            flag = rng.choice(["\\Seen", "\\Flagged", "kw"])
            box.store_flags([uid], frozenset({flag}), "add")
            out.write(f"F {uid} {flag}\n")
        else:
            uid = rng.choice(uids)
            # The intent first: if we die during the expunge, the parent must
            # accept the message either way.
            out.write(f"e {uid}\n")
            out.flush()
            box.expunge([uid])
            out.write(f"E {uid}\n")
        out.flush()


if __name__ == "__main__":
    main()
