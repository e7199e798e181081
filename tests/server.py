"""Run the real HTTP service for tests: uvicorn in a thread on a free loopback port."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def serving(bundle: Path, *, timeout: float = 30.0) -> Iterator[str]:
    """Serve ``bundle`` with ``serdistill.deploy.serve.create_app``; yield the base URL, then stop."""
    import uvicorn

    from serdistill.deploy.serve import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(bundle), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.05)
        assert server.started, f"the server did not start within {timeout:g} s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
