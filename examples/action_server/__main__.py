"""python -m examples.action_server [--port 5055]  (needs PARLANCE_ACTION_SECRET)"""

import argparse

import uvicorn

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5055)
    args = p.parse_args()
    uvicorn.run("examples.action_server.app:app", host=args.host, port=args.port, log_level="info")
