# Copyright (c) mmrsa contributors. All rights reserved.
"""Resume from the newest checkpoint that loads, whatever ``last_checkpoint``
says.

MMEngine's auto-resume (``resume=True`` without ``load_from``, i.e.
``tools/train.py --resume``) trusts ``work_dir/last_checkpoint``: when a crash
came between writing ``epoch_N.pth`` and updating that file, it is missing
(the run restarts from scratch: "Auto resumed from the latest checkpoint
None"), names a file that was removed, or names a truncated one (the run
dies in ``torch.load``).

:func:`find_resumable_checkpoint` looks at the numbered checkpoints
(``epoch_*.pth``, ``iter_*.pth``, or the ``filename_tmpl`` of the run's
``CheckpointHook``) next to the one ``last_checkpoint`` names and in the work
dir, newest first, and returns the first that loads as a training checkpoint,
logging a warning that names each file it skips and why.
:class:`ResumableRunner` uses it for auto-resume. Opt in from a config::

    runner_type = 'ResumableRunner'

With :class:`~mmrsa.engine.hooks.AtomicCheckpointHook` no partial file is
written in the first place, and with
:class:`~mmrsa.engine.hooks.RandomStateHook` the resumed run continues with
the random state of the interrupted one.
"""
import logging
import os
import os.path as osp
import re
from typing import List, Optional, Sequence, Tuple

from mmengine.dist import broadcast_object_list, get_world_size
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.runner import Runner

from mmaction.registry import RUNNERS
from mmrsa.utils.checkpoint import (CheckpointFileError,
                                    UnsafeCheckpointError,
                                    load_checkpoint_file)

__all__ = [
    'DEFAULT_FILENAME_TMPLS', 'checkpoint_problem',
    'find_resumable_checkpoint', 'ResumableRunner'
]

#: The names ``CheckpointHook`` gives checkpoints by default.
DEFAULT_FILENAME_TMPLS = ('epoch_{}.pth', 'iter_{}.pth')


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from, or ``None`` if it can.

    The file is loaded as a resume would load it
    (:func:`mmrsa.utils.checkpoint.load_checkpoint_file`, weights only). A
    file refused as unsafe counts as loadable here: resuming from it then
    fails with the message that names the per-file opt-in.
    """
    if not osp.isfile(path):
        return 'no such file'
    try:
        checkpoint = load_checkpoint_file(path, map_location='cpu')
    except UnsafeCheckpointError:
        return None
    except (CheckpointFileError, OSError) as error:
        return str(error)
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not (isinstance(meta, dict) and 'epoch' in meta and 'iter' in meta
            and 'state_dict' in checkpoint):
        return ('not a training checkpoint (no state_dict and meta.epoch / '
                'meta.iter)')
    return None


def _numbered(folder: str, tmpls: Sequence[str]) -> List[Tuple[int, str]]:
    """``(number, path)`` of the files of ``folder`` named by a template."""
    patterns = []
    for tmpl in tmpls:
        head, _, tail = tmpl.partition('{}')
        patterns.append(
            re.compile(re.escape(head) + r'(\d+)' + re.escape(tail) + '$'))
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in names:
        for pattern in patterns:
            match = pattern.match(name)
            if match:
                found.append((int(match.group(1)), osp.join(folder, name)))
                break
    return found


def find_resumable_checkpoint(
        work_dir: str,
        folders: Sequence[str] = (),
        filename_tmpls: Sequence[str] = DEFAULT_FILENAME_TMPLS
) -> Optional[str]:
    """The newest checkpoint of a run that loads, or ``None``.

    Candidates are the file ``work_dir/last_checkpoint`` names and the
    numbered checkpoints (``filename_tmpls``) in its folder, in ``work_dir``
    and in ``folders``, tried from the highest number down (the file
    ``last_checkpoint`` names, if it is not numbered, first). Each file that
    is missing, empty, truncated or not a training checkpoint is skipped
    with a warning naming it.

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
    last = None
    last_file = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last_file):
        with open(last_file) as f:
            last = f.read().strip() or None
    if last is not None and '://' in last:
        return last  # a remote checkpoint: loaded (and checked) by resume
    search = [work_dir, *folders]
    if last is not None:
        search.insert(0, osp.dirname(last))

    candidates, seen = [], set()
    for folder in search:
        for number, path in _numbered(folder, filename_tmpls):
            if osp.realpath(path) not in seen:
                seen.add(osp.realpath(path))
                candidates.append((number, path))
    # highest number first; the same number in several folders: the folder
    # last_checkpoint names first (a stable sort keeps the search order)
    candidates.sort(key=lambda c: -c[0])
    paths = [path for _, path in candidates]
    if last is not None and osp.realpath(last) not in seen:
        paths.insert(0, last)

    for path in paths:
        problem = checkpoint_problem(path)
        if problem is None:
            if last is not None and osp.realpath(path) != osp.realpath(last):
                _warn(f'{last_file} names {last}, but {path} is the newest '
                      f'checkpoint that loads: resuming from it.')
            return path
        _warn(f'Skipping checkpoint {path} for resume: {problem}')
    return None


@RUNNERS.register_module()
class ResumableRunner(Runner):
    """``Runner`` whose auto-resume takes the newest checkpoint that loads
    (:func:`find_resumable_checkpoint`) instead of trusting
    ``last_checkpoint``; when none loads, training starts from scratch with
    a warning. Everything else is ``Runner``'s. Select it in a config with
    ``runner_type = 'ResumableRunner'``.
    """

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

    def load_or_resume(self) -> None:
        if self._resume and self._load_from is None and not self._has_loaded:
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
                    f'Auto resume: no checkpoint in {self.work_dir} loads; '
                    f'training starts from scratch.')
                self._resume = False
            else:
                self.logger.info(
                    f'Auto resumed from the latest checkpoint {found[0]}.')
                self._load_from = found[0]
        super().load_or_resume()
