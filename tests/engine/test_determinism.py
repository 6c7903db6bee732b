# Copyright (c) mmrsa contributors. All rights reserved.
"""Two seeded, deterministic CPU runs of the demo config give the same
losses."""
from run_helpers import (DEMO_CONFIG, REPO_ROOT, SMALL_RUN, run_tool,
                         train_scalars)


def test_two_deterministic_runs_give_identical_losses(synth_dir,
                                                      reference_run):
    work_dir = synth_dir / 'work_dirs' / 'determinism'
    result = run_tool([
        REPO_ROOT / 'tools' / 'train.py', DEMO_CONFIG, '--work-dir', work_dir,
        '--seed', '0', '--deterministic', '--cfg-options', *SMALL_RUN,
        'train_cfg.max_epochs=1'
    ],
                      cwd=synth_dir)
    assert result.returncode == 0, result.stderr[-3000:]

    first = train_scalars(reference_run)
    second = train_scalars(work_dir)
    assert len(second) == 2 and len(first) == 4
    for a, b in zip(first, second):
        assert a['step'] == b['step']
        assert a['loss'] == b['loss'], (a, b)  # bit-identical
        assert a['grad_norm'] == b['grad_norm']
        assert a['lr'] == b['lr']
