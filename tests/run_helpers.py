# Copyright (c) mmrsa contributors. All rights reserved.
"""Helpers of the reliability tests: paths, small-run overrides, running
the command-line tools and reading what they wrote."""
import contextlib
import functools
import glob
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = str(REPO_ROOT / 'configs' / 'recognition' / 'rsanet' /
                  'rsanet_r18_8x1_synthmotion.py')
NUM_TRAIN = 8
NUM_VAL = 4

#: Overrides that shrink a run of the demo config: 2 epochs of 2 iterations
#: (batch 4 of 8 clips), no data-loading processes, a log line per
#: iteration.
SMALL_RUN = [
    'train_cfg.max_epochs=2',
    'train_dataloader.batch_size=4',
    'train_dataloader.num_workers=0',
    'train_dataloader.persistent_workers=False',
    'val_dataloader.batch_size=4',
    'val_dataloader.num_workers=0',
    'val_dataloader.persistent_workers=False',
    'default_hooks.logger.interval=1',
]


def import_tool(relpath: str):
    """A script under the repository (``tools/...``, ``demo/...``) as a
    module: imported from its folder, as ``python PATH`` runs it (the
    folders are no packages). One place for every test that calls a script's
    functions."""
    import importlib
    folder = str((REPO_ROOT / relpath).parent)
    name = Path(relpath).stem
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(folder)


def tool_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env.pop('MMRSA_TRUSTED_CHECKPOINTS', None)
    env['PYTHONPATH'] = os.pathsep.join(
        filter(None, [str(REPO_ROOT), env.get('PYTHONPATH')]))
    env.update(extra or {})
    return env


def run_tool(args: Sequence[str],
             cwd: Path,
             env: Optional[Dict[str, str]] = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` (a tool of this repository) in ``cwd``."""
    return subprocess.run([sys.executable, *map(str, args)],
                          cwd=cwd,
                          env=tool_env(env),
                          capture_output=True,
                          text=True,
                          timeout=timeout)


def train_scalars(work_dir: Path) -> List[dict]:
    """The logged training iterations of every run in ``work_dir``, in the
    order the runs were made."""
    rows = []
    for path in sorted(
            glob.glob(str(work_dir / '*' / 'vis_data' / 'scalars.json'))):
        with open(path) as f:
            rows += [r for r in map(json.loads, f) if 'loss' in r]
    return rows


def load_checkpoint(path: Path) -> dict:
    """A checkpoint read as the tools read it (mmrsa's loader: weights only,
    the allow-list of MMEngine checkpoint types)."""
    from mmrsa.fileio.checkpoint import safe_torch_load
    return safe_torch_load(str(path), map_location='cpu')


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on 127.0.0.1 (never another address)
    until the ``with`` block ends; yields the base URL. Connections idle at
    most 10 s; the server thread is joined on exit."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        timeout = 10

        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()
