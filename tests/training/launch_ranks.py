"""Launch ranks the way torchrun does: one process each, RANK/WORLD_SIZE/MASTER_* in the
environment, so ``run_job`` takes its torchrun path (it initialises the gloo group itself).

Like torchrun's agent, the launcher hosts the rendezvous TCPStore and tells the ranks so
(``TORCHELASTIC_USE_AGENT_STORE``): every rank is a store client, none runs the store server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

HERE = Path(__file__).resolve().parent


def launch(
    function: str, tmp: Path, *, world: int = 2, hash_seeds: list[int], timeout: float = 240
) -> None:
    """Run ``test_data_parallel.<function>(rank, tmp)`` on ``world`` processes; each rank gets
    its own ``PYTHONHASHSEED`` (as separate processes do), and any failure fails the call."""
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, wait_for_workers=False)
    port = store.port  # the server runs until ``store`` goes out of scope, after the ranks
    code = (
        f"import sys; sys.path[:0] = [{str(HERE)!r}]; from pathlib import Path; "
        f"import test_data_parallel as t; t.{function}(int(sys.argv[1]), Path(sys.argv[2]))"
    )
    procs, logs_out = [], []
    for rank in range(world):
        env = {
            **os.environ,
            "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "TORCHELASTIC_USE_AGENT_STORE": "True",
            "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
            "PYTHONHASHSEED": str(hash_seeds[rank]),
        }  # fmt: skip
        logs_out.append((tmp / f"rank{rank}.log").open("w"))
        argv = [sys.executable, "-c", code, str(rank), str(tmp)]
        out = logs_out[-1]
        procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=out, cwd=tmp))
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for handle in logs_out:
            handle.close()
    logs = "\n".join(
        f"--- rank {r} ---\n{(tmp / f'rank{r}.log').read_text()[-3000:]}" for r in range(world)
    )
    assert codes == [0] * world, logs
