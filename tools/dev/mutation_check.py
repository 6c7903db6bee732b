# Copyright (c) mmrsa contributors. All rights reserved.
"""Do the tests notice a plausible one-line regression? A mutation check
of the engine, the loader, the checks, the train options, the dispatch, the
ensemble and the backbone's ImageNet loading.

Each mutation replaces one exact line of one module with a plausible wrong
one (``<`` for ``<=``, a dropped ``not``, a step left out) in a temporary
COPY of the repository (``mmrsa/``, ``tests/``, ``configs/``, ``tools/``,
``demo/``, ``pytest.ini``), runs the tests named for it there (``pytest -x
-q -p no:cacheprovider``, ``PYTHONPATH`` set to the copy) and reports it
*killed* (a test failed) or *survived* (every test passed). The working
tree is never modified. Run it by hand, not in CI (it takes tens of
minutes; it is not collected by pytest)::

    nice -n 10 python tools/dev/mutation_check.py            # all
    nice -n 10 python tools/dev/mutation_check.py -k labels  # ids matching
    python tools/dev/mutation_check.py --list

A survivor needs a test that kills it, or a reason why the mutated code
behaves the same (an equivalent mutation): see ``EQUIVALENT``.
Each selection of tests is first run on the unmutated copy and must pass
(``--no-baseline`` skips that; ``--deselect NODE`` leaves out a test that
fails in the working tree for another reason); a mutation whose line is not
found (the module changed) is reported ``stale``; test files or functions
that do not exist are left out and listed. The tests that run the tools in
subprocesses (:data:`SLOW`) run only with ``--full``. ``--tests-from DIR``
copies another ``tests/`` folder, e.g. an older version, to compare what
two versions of the tests kill.
"""
import argparse
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
COPIED = ('mmrsa', 'tests', 'configs', 'tools', 'demo', 'pytest.ini')


class Mutation(NamedTuple):
    """One line of ``path`` (exactly ``old``, whitespace included, found
    once) replaced by ``new``; ``tests`` are pytest arguments (files or node
    ids, relative to the repository root)."""
    id: str
    path: str
    old: str
    new: str
    tests: Tuple[str, ...]


def M(id: str, path: str, old: str, new: str, *tests: str) -> Mutation:
    return Mutation(id, path, old, new, tuple(tests))


HOOKS = 'mmrsa/engine/hooks/'
ANN = 'mmrsa/datasets/annotation_checks.py'
T_ANN = 'tests/datasets/test_annotation_checks.py'
T_CLIP = 'tests/engine/hooks/test_clip_check_hook.py'
T_BOUND = 'tests/engine/hooks/test_hook_boundaries.py'
T_FIT = 'tests/engine/hooks/test_checkpoint_fit_hook.py'
T_RSH = 'tests/engine/hooks/test_random_state_hook.py'
T_SEEDS = 'tests/engine/test_resume_seeds.py'
T_RUNNER = 'tests/engine/runner/test_resumable_runner.py'
T_ATOMIC = 'tests/fileio/test_atomic.py'
T_HARD = 'tests/fileio/test_checkpoint_hardening.py'
T_LOADER = 'tests/fileio/test_loader_boundaries.py'
T_TRAIN = 'tests/tools/test_train_test.py'
# the tests of tools/train.py and tools/test.py that build configs (the
# others train in a subprocess: minutes)
T_TRAIN_CFG = ('tests/tools/test_train_test.py::'
               'test_train_args_map_onto_the_config',
               'tests/tools/test_train_test.py::test_test_config_errors',
               'tests/tools/test_train_test.py::test_train_config_options',
               'tests/tools/test_train_test.py::test_test_config_options')
T_DISPATCH = 'tests/models/common/test_rsa_dispatch.py'
T_ENSEMBLE = 'tests/evaluation/test_ensemble.py'
T_RSANET_INIT = ('tests/models/backbones/test_rsanet.py::'
                 'test_pretrained_loads_all_but_rsa_blocks',
                 'tests/models/backbones/test_rsanet.py::'
                 'test_pretrained_loading_reports_what_it_did')
RSANET = 'mmrsa/models/backbones/rsanet.py'
CKPT = 'mmrsa/fileio/checkpoint.py'

MUTATIONS: List[Mutation] = [
    # ---------------- annotation checks: labels in [0, num_classes) ------
    M('ann-label-eq-num-classes', ANN,
      "           and not 0 <= info['label'] < num_classes]",
      "           and not 0 <= info['label'] <= num_classes]", T_ANN),
    M('ann-label-negative', ANN,
      "           and not 0 <= info['label'] < num_classes]",
      "           and not info['label'] < num_classes]", T_ANN),
    # ---------------- ClipCheckHook -------------------------------------
    M('clip-label-eq-num-classes', HOOKS + 'clip_check_hook.py',
      '                        0 <= label < num_classes):',
      '                        0 <= label <= num_classes):', T_CLIP, T_BOUND),
    M('clip-label-negative', HOOKS + 'clip_check_hook.py',
      '                        0 <= label < num_classes):',
      '                        label < num_classes):', T_CLIP, T_BOUND),
    M('clip-train-fewer-frames', HOOKS + 'clip_check_hook.py',
      "            if split == 'train' and frames != num_segments:",
      "            if split == 'train' and frames > num_segments:", T_CLIP,
      T_BOUND),
    M('clip-twice-sample-not-counted', HOOKS + 'clip_check_hook.py',
      '            frames *= 2', '            frames *= 1', T_CLIP, T_BOUND),
    M('clip-head-segments-ignored', HOOKS + 'clip_check_hook.py',
      '        if value != num_segments:', '        if False:', T_CLIP,
      T_BOUND),
    # ---------------- CheckpointFitHook ---------------------------------
    M('fit-counters-required', HOOKS + 'checkpoint_fit_hook.py',
      "        if k not in loaded and not k.endswith('num_batches_tracked')",
      '        if k not in loaded', T_FIT, T_BOUND),
    M('fit-resume-meta-iter-optional', HOOKS + 'checkpoint_fit_hook.py',
      "                    and 'iter' in meta):",
      "                    or 'iter' in meta):", T_FIT, T_BOUND),
    # ---------------- RandomStateHook and the resumable runner ----------
    M('rsh-sampler-seed-not-restored', HOOKS + 'random_state_hook.py',
      "        sampler.seed = state['sampler_seed']", '        pass', T_RSH,
      T_SEEDS),
    M('rsh-loader-generator-not-restored', HOOKS + 'random_state_hook.py',
      "        generator.set_state(state['loader_generator'])", '        pass',
      T_RSH, T_SEEDS),
    M('rsh-restore-on-load-from', HOOKS + 'random_state_hook.py',
      "            if (runner.epoch, runner.iter) == (resumed['epoch'],",
      "            if (runner.epoch, runner.iter) != (resumed['epoch'],",
      T_RSH, T_SEEDS),
    M('runner-oldest-first', 'mmrsa/engine/runner/resumable_runner.py',
      '        found.sort(key=lambda c: -c[0])  # stable: search order kept',
      '        found.sort(key=lambda c: c[0])  # stable: search order kept',
      T_RUNNER),
    M('runner-ties-to-later-pattern',
      'mmrsa/engine/runner/resumable_runner.py',
      '            if best is None or key > best[0]:',
      '            if best is None or key >= best[0]:', T_RUNNER, T_BOUND),
    # ---------------- fileio: atomic writes, the one loader -------------
    M('atomic-no-fsync', 'mmrsa/fileio/atomic.py',
      '                os.fsync(f.fileno())', '                pass',
      T_ATOMIC),
    M('atomic-dangling-link-overwritten', 'mmrsa/fileio/atomic.py',
      '    if osp.lexists(path) and not force:',
      '    if osp.exists(path) and not force:', T_ATOMIC, T_LOADER),
    M('hash-first-chunk-only', CKPT,
      "        for chunk in iter(lambda: f.read(chunk_size), b''):",
      '        for chunk in [f.read(chunk_size)]:', T_HARD, T_LOADER),
    M('hash-prefix-8-digits-only', CKPT,
      '    if not actual.startswith(expected):',
      '    if not actual.startswith(expected[:8]):', T_HARD, T_LOADER),
    M('hash-name-needs-9-digits', CKPT,
      "HASH_IN_NAME = re.compile(r'-([0-9a-f]{8,64})\\.(pth|pt|ckpt)$')",
      "HASH_IN_NAME = re.compile(r'-([0-9a-f]{9,64})\\.(pth|pt|ckpt)$')",
      T_HARD, T_LOADER),
    M('numeric-check-shallow', CKPT, '    if depth > 100:',
      '    if depth > 1:', 'tests/fileio/test_checkpoint.py', T_LOADER),
    # ---------------- train / test options --------------------------------
    M('train-diff-rank-seed-dropped', 'mmrsa/apis/run_config.py',
      "        randomness['diff_rank_seed'] = True",
      "        randomness['diff_rank_seed'] = False", *T_TRAIN_CFG),
    M('train-amp-static-loss-scale', 'mmrsa/apis/run_config.py',
      "        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')",
      "        cfg.optim_wrapper.setdefault('loss_scale', 512.)",
      *T_TRAIN_CFG),
    M('train-resume-auto-ignored', 'mmrsa/apis/run_config.py',
      '        cfg.resume, cfg.load_from = True, None',
      '        cfg.resume, cfg.load_from = False, None', *T_TRAIN_CFG),
    M('train-launcher-dropped', 'mmrsa/apis/run_config.py',
      '    cfg.launcher = launcher', "    cfg.launcher = 'none'",
      *T_TRAIN_CFG),
    M('test-show-interval-dropped', 'mmrsa/apis/run_config.py',
      '            interval=interval,', '            interval=1,',
      *T_TRAIN_CFG),
    M('test-resume-left-on', 'mmrsa/apis/run_config.py',
      '    cfg.resume = False', '    cfg.resume = True', *T_TRAIN_CFG),
    # ---------------- select_path -------------------------------------------
    M('dispatch-compiling-reads-env', 'mmrsa/models/common/rsa.py',
      '    tracing = torch.jit.is_tracing() or torch.compiler.is_compiling()',
      '    tracing = torch.jit.is_tracing()', T_DISPATCH),
    M(
        'dispatch-loops-bmm-swapped', 'mmrsa/models/common/rsa.py',
        "        auto = 'cpu_loops' if use_position_loops(x, *sizes) else "
        "'cpu_bmm'",
        "        auto = 'cpu_bmm' if use_position_loops(x, *sizes) else "
        "'cpu_loops'", T_DISPATCH),
    M('dispatch-loop-limit-exclusive', 'mmrsa/models/common/rsa_ops.py',
      "    if x.device.type != 'cpu' or max(sizes) > MAX_LOOP_CONTRACTION:",
      "    if x.device.type != 'cpu' or max(sizes) >= MAX_LOOP_CONTRACTION:",
      T_DISPATCH),
    # ---------------- ensemble --------------------------------------------
    M('ensemble-zero-weight-refused', 'mmrsa/evaluation/ensemble.py',
      '    if min(weights) < 0:', '    if min(weights) <= 0:', T_ENSEMBLE,
      T_LOADER),
    M('ensemble-one-file-accepted', 'mmrsa/evaluation/ensemble.py',
      '    if len(paths) < 2:', '    if len(paths) < 1:', T_ENSEMBLE,
      T_LOADER),
    M('ensemble-hardlink-overwritten', 'mmrsa/evaluation/ensemble.py',
      '            same = osp.samefile(out, path)', '            same = False',
      T_ENSEMBLE, T_LOADER),
    # ---------------- RSANet ImageNet loading -------------------------------
    M('imagenet-counters-required', RSANET,
      '                      if k in state_dict]', '                      ]',
      *T_RSANET_INIT, T_LOADER),
    M('imagenet-module-prefix-kept', RSANET,
      "            (k[7:] if k.startswith('module.') else k, v)",
      '            (k, v)', *T_RSANET_INIT, T_LOADER),
    M('imagenet-model-key-ignored', RSANET,
      "        for key in ('state_dict', 'model'):",
      "        for key in ('state_dict', ):", *T_RSANET_INIT, T_LOADER),
    M(
        'imagenet-shape-not-checked', RSANET,
        '                if k not in state_dict or state_dict[k].shape != '
        't.shape', '                if k not in state_dict', *T_RSANET_INIT,
        T_LOADER),
]

#: ``(outcome, seconds, first failing test)`` of a pytest run.
Outcome = Tuple[str, float, str]

#: Survivors whose mutated code behaves like the original, and why.
EQUIVALENT: Dict[str, str] = {
    'runner-ties-to-later-pattern':
    'a tie is two checkpoints of the run being resumed with the same '
    '(iter, epoch), neither named by last_checkpoint (that one wins the '
    'tie by the third key): the same training state, so which of the two '
    'files is read does not change the resumed run',
}

#: Tests that run the tools in subprocesses (tens of seconds each): left
#: out unless ``--full``; the checks they reach run in-process in the
#: selected files too.
SLOW = (
    'tests/engine/hooks/test_checkpoint_fit_hook.py::'
    'test_demo_refuses_another_architecture',
    'tests/engine/hooks/test_checkpoint_fit_hook.py::'
    'test_test_tool_refuses_another_architecture',
    'tests/engine/hooks/test_checkpoint_fit_hook.py::'
    'test_resume_with_another_config_names_the_keys',
    'tests/engine/hooks/test_checkpoint_fit_hook.py::'
    'test_resume_from_weights_only_checkpoint_says_use_load_from',
    'tests/engine/hooks/test_clip_check_hook.py::'
    'test_fires_under_mmaction2_own_train_tool',
    'tests/engine/hooks/test_clip_check_hook.py::'
    'test_label_beyond_the_head_names_file_and_line',
    'tests/fileio/test_checkpoint.py::test_tools_refuse',
    'tests/fileio/test_checkpoint.py::test_demo_refuses',
)


def copy_repository(to: str, tests_from: Optional[str] = None) -> None:
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '.pytest_cache')
    for name in COPIED:
        src = osp.join(ROOT, name)
        if name == 'tests' and tests_from:
            src = tests_from
        if osp.isdir(src):
            shutil.copytree(src, osp.join(to, name), ignore=ignore)
        elif osp.isfile(src):
            shutil.copy2(src, osp.join(to, name))


def existing(tests: Sequence[str], root: str) -> Tuple[List[str], List[str]]:
    """The test arguments whose file exists in ``root``, and the others."""
    found, missing = [], []
    for test in tests:
        path, _, name = test.partition('::')
        path = osp.join(root, path)
        there = osp.isfile(path)
        if there and name:
            with open(path) as f:
                there = re.search(rf'^def {re.escape(name.split("[")[0])}\(',
                                  f.read(), re.M) is not None
        (found if there else missing).append(test)
    return found, missing


def run_pytest(root: str, tests: Sequence[str], timeout: float,
               deselect: Sequence[str]) -> Outcome:
    """``(outcome, seconds, first failing test)``: outcome is 'passed',
    'failed', 'timeout' or 'error (exit code N)'."""
    env = dict(os.environ)
    env.update(
        PYTHONPATH=root,
        PYTHONDONTWRITEBYTECODE='1',
        MMRSA_TEST_THREADS='1',
        OMP_NUM_THREADS='1')
    command = [
        sys.executable, '-m', 'pytest', '-x', '-q', '-rfE', '-p',
        'no:cacheprovider', *tests
    ]
    for node in deselect:
        command += ['--deselect', node]
    start = time.time()
    try:
        result = subprocess.run(
            command,
            cwd=root,
            env=env,
            timeout=timeout,
            capture_output=True,
            text=True)
    except subprocess.TimeoutExpired:
        return 'timeout', time.time() - start, ''
    seconds = time.time() - start
    output = result.stdout + result.stderr
    failing = re.search(r'^(?:FAILED|ERROR) (\S+)', output, re.M)
    first = failing.group(1) if failing else ''
    if result.returncode == 0:
        return 'passed', seconds, first
    if result.returncode == 1:
        return 'failed', seconds, first
    return (f'error (exit code {result.returncode})', seconds, first
            or output.strip().splitlines()[-1:][0] if output.strip() else '')


def apply(root: str, mutation: Mutation) -> Optional[str]:
    """Apply ``mutation`` in ``root``; return the original text, or None
    when its line is not found exactly once."""
    path = osp.join(root, mutation.path)
    with open(path) as f:
        text = f.read()
    lines = text.split('\n')
    hits = [i for i, line in enumerate(lines) if line == mutation.old]
    if len(hits) != 1:
        return None
    lines[hits[0]] = mutation.new
    with open(path, 'w') as f:
        f.write('\n'.join(lines))
    return text


def restore(root: str, mutation: Mutation, text: str) -> None:
    with open(osp.join(root, mutation.path), 'w') as f:
        f.write(text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '-k',
        dest='pattern',
        default='',
        help='only mutations whose id contains this text')
    parser.add_argument(
        '--list', action='store_true', help='list the mutations and exit')
    parser.add_argument(
        '--no-baseline',
        action='store_true',
        help='skip the runs of the unmutated copy')
    parser.add_argument(
        '--timeout',
        type=float,
        default=900,
        help='seconds per pytest run (default 900)')
    parser.add_argument(
        '--full',
        action='store_true',
        help='also run the subprocess tests of SLOW')
    parser.add_argument(
        '--deselect',
        action='append',
        default=[],
        help='a test id to leave out (e.g. one that fails '
        'in the working tree for another reason)')
    parser.add_argument(
        '--tests-from',
        default=None,
        help='copy this folder as tests/ (e.g. an older '
        'version of the tests, to compare)')
    args = parser.parse_args(argv)
    deselect = list(args.deselect) + ([] if args.full else list(SLOW))
    chosen = [m for m in MUTATIONS if args.pattern in m.id]
    if args.list:
        for m in chosen:
            print(f'{m.id:36} {m.path}\n    - {m.old.strip()}\n'
                  f'    + {m.new.strip()}\n    tests: {" ".join(m.tests)}')
        return 0
    with tempfile.TemporaryDirectory(prefix='mmrsa_mutants_') as root:
        copy_repository(root, args.tests_from)
        if not args.no_baseline:
            selections = list(
                dict.fromkeys(
                    tuple(existing(m.tests, root)[0]) for m in chosen))
            for tests in selections:
                outcome, seconds, first = run_pytest(root, tests, args.timeout,
                                                     deselect)
                print(
                    f'baseline {outcome:8} {seconds:6.1f}s '
                    f'{" ".join(tests)} {first}',
                    flush=True)
                if outcome != 'passed':
                    print('the unmutated tests do not pass: fix that first')
                    return 2
        rows = []
        for m in chosen:
            tests, missing = existing(m.tests, root)
            text = apply(root, m)
            if text is None:
                outcome, seconds, first = 'stale', 0., 'line not found once'
            elif not tests:
                restore(root, m, text)
                outcome, seconds, first = 'no tests', 0., ''
            else:
                try:
                    outcome, seconds, first = run_pytest(
                        root, tests, args.timeout, deselect)
                finally:
                    restore(root, m, text)
            verdict = {
                'failed': 'killed',
                'timeout': 'killed (timeout)',
                'passed': 'SURVIVED'
            }.get(outcome, outcome)
            if verdict == 'SURVIVED' and m.id in EQUIVALENT:
                verdict = 'survived (equivalent)'
                first = EQUIVALENT[m.id]
            rows.append((m.id, verdict, seconds, first, missing))
            print(
                f'{m.id:36} {verdict:22} {seconds:6.1f}s {first}' +
                (f' [missing: {" ".join(missing)}]' if missing else ''),
                flush=True)
    survived = [r for r in rows if r[1] == 'SURVIVED']
    print(f'\n{len(rows)} mutations: '
          f'{sum(r[1].startswith("killed") for r in rows)} killed, '
          f'{sum(r[1].endswith("(equivalent)") for r in rows)} equivalent, '
          f'{len(survived)} survived' +
          (f' ({", ".join(r[0] for r in survived)})' if survived else ''))
    return 1 if survived else 0


if __name__ == '__main__':
    sys.exit(main())
