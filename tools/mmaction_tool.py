# Copyright (c) mmrsa contributors. All rights reserved.
"""Run one of MMAction2's packaged tools with mmrsa's fixes in place.

MMAction2 1.2.0 ships its ``tools/`` inside the wheel
(``mmaction/.mim/tools``), but on the pinned stack several fail before they
get to the model, whatever the model:
``analysis_tools/confusion_matrix.py`` on ``No module named
'mmaction.models.localizers.drn'`` (the wheel lacks that folder), and
``deployment/publish_model.py`` on ``Weights only load failed ...
HistoryBuffer`` (torch >= 2.6 loads with ``weights_only=True``). This runner
imports mmrsa first (its compat fixes, its safe checkpoint loaders, its
registered modules) and then runs the tool as ``python TOOL ARGS`` would::

    python tools/mmaction_tool.py analysis_tools/confusion_matrix.py \\
        CONFIG SCORES.pkl --label-file LABELS --out cm.pkl --show-path cm.png
    python tools/mmaction_tool.py deployment/publish_model.py IN.pth OUT.pth
    python tools/mmaction_tool.py --list

While the tool runs, ``torch.load`` reads through mmrsa's safe loader
(:func:`mmrsa.fileio.checkpoint.safe_torch_load`: ``weights_only=True`` with
the allow-list of MMEngine checkpoints, whatever ``weights_only`` the tool
passes), so no checkpoint runs code; a local file listed in
``MMRSA_TRUSTED_CHECKPOINTS`` is read with full pickle.
``.pkl`` files a tool reads with ``mmengine.load`` are plain pickles: give
the tools only files you trust.
"""
import difflib
import os
import os.path as osp
import runpy
import sys
from typing import List, Optional, Sequence

# runnable from a source checkout without installing mmrsa
sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..')))

USAGE = ('usage: python tools/mmaction_tool.py TOOL [ARGS ...]\n'
         '       python tools/mmaction_tool.py --list\n\n'
         "Run MMAction2's packaged tool mmaction/.mim/tools/TOOL (e.g.\n"
         'analysis_tools/confusion_matrix.py) after importing mmrsa; ARGS go '
         'to the tool\n(TOOL --help shows its own).')


class ToolNotFoundError(LookupError):
    """The installed MMAction2 has no such packaged tool."""


def tools_root() -> str:
    """``mmaction/.mim/tools`` of the installed MMAction2."""
    import mmaction
    return osp.join(
        osp.dirname(osp.abspath(mmaction.__file__)), '.mim', 'tools')


def list_tools(root: Optional[str] = None) -> List[str]:
    """The Python tools under ``root``, as paths relative to it."""
    root = root or tools_root()
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != '__pycache__')
        for name in files:
            if name.endswith('.py') and name != '__init__.py':
                found.append(
                    osp.relpath(osp.join(folder, name),
                                root).replace(os.sep, '/'))
    return sorted(found)


def resolve_tool(name: str, root: Optional[str] = None) -> str:
    """The file of tool ``name`` (``analysis_tools/confusion_matrix.py``;
    a leading ``tools/`` and the ``.py`` may be left out).

    Raises:
        ToolNotFoundError: No such Python tool inside ``root``; the message
            names the MMAction2 version and the nearest tools.
    """
    import mmaction
    root = root or tools_root()
    rel = name.replace('\\', '/')
    if rel.startswith('tools/'):
        rel = rel[len('tools/'):]
    if not rel.endswith('.py'):
        rel += '.py'
    path = osp.realpath(osp.join(root, rel))
    inside = path.startswith(osp.realpath(root) + os.sep)
    if inside and osp.isfile(path):
        return path
    where = (f'MMAction2 {mmaction.__version__} '
             f'({osp.dirname(osp.abspath(mmaction.__file__))})')
    if not osp.isdir(root):
        raise ToolNotFoundError(
            f'{where} has no packaged tools folder ({root}); install the '
            f'mmaction2 wheel (pip install mmaction2==1.2.0) or run the tool '
            f'from a clone of MMAction2 after "import mmrsa".')
    tools = list_tools(root)
    close = difflib.get_close_matches(rel, tools, n=3, cutoff=0.5)
    hint = (f' Did you mean {", ".join(close)}?'
            if close else ' List them with --list.')
    raise ToolNotFoundError(
        f'{where} has no tool {name!r} under mmaction/.mim/tools '
        f'({len(tools)} Python tools there).{hint}')


def run(tool: str, args: Sequence[str]) -> None:
    """Run ``tool`` with ``args`` as ``python TOOL ARGS`` would, after
    ``import mmrsa``."""
    import mmrsa  # noqa: F401  (compat fixes, safe loaders, registration)
    from mmrsa.fileio.checkpoint import (CheckpointFileError,
                                         UnsafeCheckpointError,
                                         torch_load_through_loader)
    path = resolve_tool(tool)
    argv, sys_path = sys.argv, list(sys.path)
    sys.argv = [path, *args]
    sys.path.insert(0, osp.dirname(path))
    try:
        with torch_load_through_loader():
            runpy.run_path(path, run_name='__main__')
    except (UnsafeCheckpointError, CheckpointFileError) as err:
        raise SystemExit(f'error: {err}') from None
    finally:
        sys.argv, sys.path[:] = argv, sys_path


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    if argv[0] in ('-h', '--help'):
        print(USAGE)
        return
    if argv[0] == '--list':
        print('\n'.join(list_tools()))
        return
    try:
        run(argv[0], argv[1:])
    except ToolNotFoundError as err:
        raise SystemExit(f'error: {err}') from None


if __name__ == '__main__':
    main()
