"""The quick start, exactly as README shows it: ``examples/ums.toml`` on 127.0.0.1:5060.

A call to 100 ends up as an e-mail in alice's Maildir under the data directory, and a
SUBSCRIBE to ``sip:100@127.0.0.1:5060`` for ``message-summary`` shows the count.  The
configuration file is used unchanged (only ``--data-dir`` points into the test's folder),
so this test needs the quick-start ports 5060 (UDP/TCP) free.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.conftest import require
from tests.acceptance.test_mwi import notify_fields
from tests.peers import sipp
from tests.peers.ports import free_port, free_port_block
from tests.peers.procs import Proc, wait_until
from tests.peers.ums import REPO, python_executable

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

EXAMPLE = REPO / "examples" / "ums.toml"
ADDRESS = "127.0.0.1:5060"


def test_quick_start_voicemail_reaches_the_maildir_and_the_lamp(run_dir: Path) -> None:
    require("sipp")
    data = run_dir / "var"
    argv = [python_executable(), "-m", "ums", "serve", "--config", str(EXAMPLE), "--data-dir", str(data)]
    server = Proc(argv, run_dir, "ums", cwd=REPO).start()
    try:
        server.wait_udp_sip("127.0.0.1", 5060, 20)
        phone = sipp.start(
            "mwi_subscribe",
            run_dir,
            "phone",
            remote=ADDRESS,
            local_port=free_port(),
            service="100",
            calls=1,
            variables={"count": 2, "reject_at": 0, "expires": 600},
            timeout_s=60,
        )
        with phone:
            first = notify_fields(phone.wait_log("notify n=1", timeout=5)[0])
            assert (first["waiting"], first["voice"]) == ("no", "0/0"), first
            caller = sipp.run(
                "uac_pcap",
                run_dir,
                "caller",
                remote=ADDRESS,
                local_port=free_port(),
                service="100",
                calls=1,
                media=("127.0.0.1", free_port_block(4)),
                timeout_s=30,
                wait_s=40,
            )
            assert caller.returncode == 0, caller.describe()
            second = notify_fields(phone.wait_log("notify n=2", timeout=10)[0])
            assert (second["waiting"], second["voice"]) == ("yes", "1/0"), second

        maildir = data / "maildir" / "alice@example.com" / "Maildir" / "new"
        wait_until(lambda: maildir.is_dir() and any(maildir.iterdir()), 20, what="mail in alice's Maildir")
        (mail,) = list(maildir.iterdir())
        text = mail.read_bytes().decode("ascii", errors="replace")
        assert "Subject: Voicemail from " in text and "X-UMS-Kind: voice" in text
        assert "audio/wav" in text or "audio/x-wav" in text
    finally:
        assert server.stop(20) == 0, server.stderr_path.read_text()[-3000:]
