# Copyright (c) mmrsa contributors. All rights reserved.
"""Resume the run that was interrupted, from its newest checkpoint that
loads; one run per work dir.

MMEngine's auto-resume (``resume=True`` without ``load_from``, i.e.
``tools/train.py --resume``) trusts ``work_dir/last_checkpoint``: when a crash
came between writing ``epoch_N.pth`` and updating that file, it is missing
(the run restarts from scratch: "Auto resumed from the latest checkpoint
None"), names a file that was removed, or names a truncated one (the run
dies in ``torch.load``). Taking the highest-numbered file instead resumes a
run that was abandoned in the same work dir, or compares ``iter_500.pth``
with ``epoch_3.pth`` by their numbers.

Every run of :class:`ResumableRunner` has a **run id**: a new one for a run
that starts from scratch (or from ``load_from``), the id of the checkpoint
for a run that resumes, so a run keeps its id across any number of resumes.
The id goes into the meta of every checkpoint the run saves
(``meta['run_id']``) and into ``work_dir/run_id``.

:func:`find_resumable_checkpoint` decides what ``--resume`` continues:

* *this run* is the one ``work_dir/run_id`` names or, without that file,
  the run of the checkpoint ``last_checkpoint`` names;
* it resumes from the newest checkpoint of this run that loads as a training
  checkpoint: the one ``last_checkpoint`` names, or one the same run wrote
  after it (a crash between writing ``epoch_N.pth`` and updating
  ``last_checkpoint``). "Newest" is the iteration count in the checkpoint's
  meta, so ``iter_*`` and ``epoch_*`` files compare correctly;
* checkpoints of another run, and files that are missing, empty, truncated,
  not checkpoints at all, or not training checkpoints, are skipped with a
  warning naming each file and why;
* when nothing names a run (a work dir written before run ids, or by
  MMEngine's own runner), the newest checkpoint that loads is taken.

Every candidate up to the first usable one of each file name pattern is read
once (weights only), to learn its run and iteration.

:class:`ResumableRunner` uses it for auto-resume and, while it trains,
holds the work dir's lock (:class:`~mmrsa.engine.runner.work_dir_lock.
WorkDirLock`: a second run in the same work dir refuses at once, naming this
one) and removes the temporary files that a killed run's atomic writes left
(``.epoch_3.pth.<random>.tmp``). Opt in from a config::

    runner_type = 'ResumableRunner'

With :class:`~mmrsa.engine.hooks.AtomicCheckpointHook` no partial file is
written in the first place, and with
:class:`~mmrsa.engine.hooks.RandomStateHook` the resumed run continues with
the random state of the interrupted one.
"""
import glob
import logging
import os
import os.path as osp
import re
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.dist import (broadcast_object_list, get_world_size,
                           is_main_process)
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.runner import Runner

from mmaction.registry import RUNNERS
# the name a pre-empted run gives its checkpoint (PreemptionHook)
from mmrsa.engine.hooks.preemption_hook import PREEMPTED_FILENAME_TMPL
from mmrsa.fileio.atomic import remove_stale_temporaries, write_bytes_atomic
from mmrsa.fileio.checkpoint import (CheckpointFileError,
                                     UnsafeCheckpointError,
                                     load_checkpoint_file)
from .work_dir_lock import WorkDirBusyError, WorkDirLock

__all__ = [
    'DEFAULT_FILENAME_TMPLS', 'PREEMPTED_FILENAME_TMPL', 'RUN_ID_FILE',
    'checkpoint_problem', 'checkpoint_meta', 'read_run_id',
    'find_resumable_checkpoint', 'remove_checkpoint_temporaries',
    'ResumableRunner'
]

#: The names ``CheckpointHook`` gives checkpoints by default, and the
#: pre-empted checkpoint's.
DEFAULT_FILENAME_TMPLS = ('epoch_{}.pth', 'iter_{}.pth',
                          PREEMPTED_FILENAME_TMPL)

#: The file of the work dir that names the run using it.
RUN_ID_FILE = 'run_id'


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def checkpoint_meta(path: str) -> Tuple[Optional[str], Optional[dict]]:
    """``(problem, meta)`` of ``path``: why it cannot be resumed from (or
    ``None``) and its ``meta`` (or ``None`` when it was not read).

    The file is loaded as a resume would load it
    (:func:`mmrsa.fileio.checkpoint.load_checkpoint_file`, weights only). A
    file refused as unsafe counts as loadable, with no meta: resuming from
    it then fails with the message that names the per-file opt-in.
    """
    if not osp.isfile(path):
        return 'no such file', None
    try:
        checkpoint = load_checkpoint_file(path, map_location='cpu')
    except UnsafeCheckpointError:
        return None, None
    except (CheckpointFileError, OSError) as error:
        return str(error), None
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not (isinstance(meta, dict) and 'epoch' in meta and 'iter' in meta
            and 'state_dict' in checkpoint):
        return ('not a training checkpoint (no state_dict and meta.epoch / '
                'meta.iter)'), None
    return None, meta


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from, or ``None`` if it can (see
    :func:`checkpoint_meta`)."""
    return checkpoint_meta(path)[0]


def read_run_id(work_dir: str) -> Optional[str]:
    """The run id ``work_dir/run_id`` holds, or ``None``."""
    try:
        with open(osp.join(work_dir, RUN_ID_FILE)) as f:
            return f.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _pattern(tmpl: str) -> 're.Pattern':
    head, _, tail = tmpl.partition('{}')
    return re.compile(re.escape(head) + r'(\d+)' + re.escape(tail) + '$')


def _numbered(folder: str, tmpl: str) -> List[Tuple[int, str]]:
    """``(number, path)`` of the files of ``folder`` named by ``tmpl``."""
    pattern = _pattern(tmpl)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in names:
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), osp.join(folder, name)))
    return found


def _read_last_checkpoint(work_dir: str) -> Optional[str]:
    try:
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            return f.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def find_resumable_checkpoint(
        work_dir: str,
        folders: Sequence[str] = (),
        filename_tmpls: Sequence[str] = DEFAULT_FILENAME_TMPLS
) -> Optional[str]:
    """The newest checkpoint of the run to resume that loads, or ``None``.

    See the module docstring for the rule. Candidates are the file
    ``work_dir/last_checkpoint`` names and the numbered checkpoints
    (``filename_tmpls``) in its folder, in ``work_dir`` and in ``folders``.

    Args:
        work_dir (str): The run's work dir.
        folders (Sequence[str]): More folders holding checkpoints (a
            ``CheckpointHook``'s ``out_dir``). Defaults to ().
        filename_tmpls (Sequence[str]): Checkpoint names, ``{}`` standing
            for the epoch or iteration. Defaults to
            :data:`DEFAULT_FILENAME_TMPLS`.

    Returns:
        str or None: The path to resume from.
    """
    last_file = osp.join(work_dir, 'last_checkpoint')
    last = _read_last_checkpoint(work_dir)
    if last is not None and '://' in last:
        return last  # a remote checkpoint: loaded (and checked) by resume
    search = [work_dir, *folders]
    if last is not None:
        search.insert(0, osp.dirname(last))

    # one group per name pattern, highest number first; a file found in
    # several folders counts once (the folder last_checkpoint names first)
    groups: List[List[str]] = []
    seen = set()
    for tmpl in dict.fromkeys(filename_tmpls):
        found = []
        for folder in dict.fromkeys(search):
            for number, path in _numbered(folder, tmpl):
                if osp.realpath(path) not in seen:
                    seen.add(osp.realpath(path))
                    found.append((number, path))
        found.sort(key=lambda c: -c[0])  # stable: search order kept
        if found:
            groups.append([path for _, path in found])
    if last is not None and osp.realpath(last) not in seen:
        groups.insert(0, [last])

    inspected: Dict[str, Tuple[Optional[str], Optional[dict]]] = {}

    def inspect(path: str) -> Tuple[Optional[str], Optional[dict]]:
        if path not in inspected:
            inspected[path] = checkpoint_meta(path)
            if inspected[path][0] is not None:
                _warn(f'Skipping checkpoint {path} for resume: '
                      f'{inspected[path][0]}')
        return inspected[path]

    run_id, named_by = read_run_id(work_dir), osp.join(work_dir, RUN_ID_FILE)
    if run_id is None and last is not None:
        problem, meta = inspect(last)
        if problem is None and meta is not None:
            run_id, named_by = meta.get('run_id'), last_file

    best: Optional[Tuple[tuple, str]] = None
    for group in groups:
        for path in group:
            problem, meta = inspect(path)
            if problem is not None:
                continue
            if meta is None:  # refused as unsafe: its run is unknown
                if run_id is not None:
                    _warn(f'Skipping checkpoint {path} for resume: its run '
                          f'cannot be read without running code from it.')
                    continue
                key = (-1, -1, 0)
            else:
                if run_id is not None and meta.get('run_id') != run_id:
                    _warn(f'Skipping checkpoint {path} for resume: it was '
                          f"written by another run (run id "
                          f"{meta.get('run_id')}; {named_by} names run "
                          f'{run_id}).')
                    continue
                key = (meta['iter'], meta['epoch'],
                       int(
                           last is not None
                           and osp.realpath(path) == osp.realpath(last)))
            if best is None or key > best[0]:
                best = (key, path)
            break  # older files of this pattern: not newer than this one
    if best is None:
        return None
    path = best[1]
    if last is not None and osp.realpath(path) != osp.realpath(last):
        _warn(f'{last_file} names {last}, but {path}, written by the same '
              f'run, is the newest checkpoint that loads: resuming from it.')
    return path


def remove_checkpoint_temporaries(
        folders: Sequence[str],
        filename_tmpls: Sequence[str] = DEFAULT_FILENAME_TMPLS) -> List[str]:
    """Remove the temporary files that an atomic write of a checkpoint,
    ``last_checkpoint`` or ``run_id`` left in ``folders`` when its process
    was killed (``.epoch_3.pth.<random>.tmp``). Only names of these
    patterns are removed; the caller must be the only writer (it holds the
    work dir's lock).

    Returns:
        list[str]: The files removed.
    """
    names = ['last_checkpoint', RUN_ID_FILE, 'best_*.pth']
    for tmpl in filename_tmpls:
        head, _, tail = tmpl.partition('{}')
        names.append(glob.escape(head) + '*' + glob.escape(tail))
    removed = []
    for folder in dict.fromkeys(folders):
        for name in dict.fromkeys(names):
            removed += remove_stale_temporaries(folder, f'.{name}.*.tmp')
    return removed


@RUNNERS.register_module()
class ResumableRunner(Runner):
    """``Runner`` whose auto-resume continues the interrupted run from its
    newest checkpoint that loads (:func:`find_resumable_checkpoint`) instead
    of trusting ``last_checkpoint``; when none loads, training starts from
    scratch with a warning. While it trains it holds the work dir's lock and
    gives its checkpoints its run id (see the module docstring). Everything
    else is ``Runner``'s. Select it in a config with
    ``runner_type = 'ResumableRunner'``.
    """

    #: This run's id (set when the run loads or resumes, i.e. at the start
    #: of ``train``).
    run_id: Optional[str] = None

    def _checkpoint_folders(self) -> Tuple[List[str], List[str]]:
        """Folders and file name templates of the run's checkpoint hooks."""
        folders, tmpls = [], list(DEFAULT_FILENAME_TMPLS)
        for hook in self.hooks:
            if not isinstance(hook, CheckpointHook):
                continue
            tmpls.insert(0, hook.filename_tmpl)
            out_dir = hook.out_dir
            if out_dir is not None and '://' not in str(out_dir):
                # CheckpointHook.before_train appends the work dir's name
                if out_dir != self.work_dir:
                    out_dir = osp.join(
                        out_dir, osp.basename(self.work_dir.rstrip(osp.sep)))
                folders.append(out_dir)
        return folders, tmpls

    # -- one run per work dir ------------------------------------------- #
    def train(self):
        """``Runner.train`` holding the work dir's lock (rank 0), after
        removing stale temporary files of checkpoint writes.

        Raises:
            WorkDirBusyError: Another run holds the work dir.
        """
        lock = WorkDirLock(self.work_dir)
        refused = [None]
        if self.rank == 0:
            try:
                lock.acquire()
            except WorkDirBusyError as error:
                refused[0] = str(error)
        if get_world_size() > 1:
            broadcast_object_list(refused, src=0)
        if refused[0] is not None:
            raise WorkDirBusyError(refused[0])
        self._training = True
        try:
            if self.rank == 0:
                folders, tmpls = self._checkpoint_folders()
                removed = remove_checkpoint_temporaries(
                    [self.work_dir, *folders], tmpls)
                if removed:
                    self.logger.info(
                        'Removed temporary files that a killed run left: ' +
                        ', '.join(removed))
            return super().train()
        finally:
            self._training = False
            lock.release()

    # -- resume --------------------------------------------------------- #
    def load_or_resume(self) -> None:
        if self._has_loaded:
            if getattr(self, '_training', False) and self.run_id is None:
                self._start_run_id(None)
            return
        if self._resume and self._load_from is None:
            found = [None]
            if self.rank == 0:
                folders, tmpls = self._checkpoint_folders()
                found[0] = find_resumable_checkpoint(self.work_dir, folders,
                                                     tmpls)
            if get_world_size() > 1:
                # one decision for all processes
                broadcast_object_list(found, src=0)
            if found[0] is None:
                self.logger.warning(
                    f'Auto resume: no checkpoint of this run in '
                    f'{self.work_dir} loads; training starts from scratch.')
                self._resume = False
            else:
                self.logger.info(
                    f'Auto resumed from the latest checkpoint {found[0]}.')
                self._load_from = found[0]
        resumed = self._resume and self._load_from is not None
        self._loaded_meta = None
        super().load_or_resume()
        if getattr(self, '_training', False):  # not for val / test runs
            meta = self._loaded_meta if resumed else None
            self._start_run_id(meta.get('run_id') if meta else None)

    def load_checkpoint(self, filename: str, *args, **kwargs):
        checkpoint = super().load_checkpoint(filename, *args, **kwargs)
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) \
            else None
        self._loaded_meta = meta if isinstance(meta, dict) else None
        return checkpoint

    def _start_run_id(self, resumed_id: Optional[str]) -> None:
        """Keep the resumed run's id, or make a new one; write it to
        ``work_dir/run_id``."""
        run_id = [resumed_id or uuid.uuid4().hex]
        if get_world_size() > 1:
            broadcast_object_list(run_id, src=0)
        self.run_id = run_id[0]
        if is_main_process() and read_run_id(self.work_dir) != self.run_id:
            write_bytes_atomic(
                osp.join(self.work_dir, RUN_ID_FILE),
                (self.run_id + '\n').encode())
        self.logger.info(f'Run id {self.run_id}' + (
            ' (kept from the resumed checkpoint).' if resumed_id else '.'))

    def save_checkpoint(self,
                        out_dir: str,
                        filename: str,
                        *args,
                        meta: Optional[dict] = None,
                        **kwargs) -> None:
        """``Runner.save_checkpoint`` with ``meta['run_id']``."""
        meta = dict(meta or {})
        if self.run_id is not None:
            meta.setdefault('run_id', self.run_id)
        super().save_checkpoint(out_dir, filename, *args, meta=meta, **kwargs)
