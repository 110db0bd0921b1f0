"""`worker` and `serve`: the engine in its own process, for the QGIS plugin (stdin/stdout) or the network (HTTP)."""
from __future__ import annotations

import os
import sys


def _worker(args) -> int:
    from ..service.worker import main

    return main()


def _serve(args) -> int:
    from ..service.server import make_server

    given = args.token or os.environ.get("GAIR_SERVE_TOKEN")
    httpd, token = make_server(args.host, args.port, given, model=args.model, workdir=args.workdir)
    host, port = httpd.server_address[:2]
    shown = "as given" if given else token  # a token the user chose is never echoed to the console
    print(f"GAIR engine serving on http://{host}:{port} (token: {shown})", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("warning: reachable from the network; anyone who can reach this port can try tokens "
              "(see README: remote engine)", file=sys.stderr)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("worker", help="speak the worker protocol on stdin/stdout (started by the QGIS plugin)")
    p.set_defaults(handler=_worker)
    p = subparsers.add_parser("serve", help="run the worker protocol over HTTP for remote clients (GPU machine)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", default=None,
                   help="shared secret clients send (default: $GAIR_SERVE_TOKEN, else a random one printed at start)")
    p.add_argument("--model", default=None, help="the model every job uses (default: $GAIR_CHECKPOINT / the hub)")
    p.add_argument("--workdir", default=None, help="folder for job files (default: a new temporary folder)")
    p.set_defaults(handler=_serve)
