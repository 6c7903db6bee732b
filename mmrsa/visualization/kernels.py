# Copyright (c) mmrsa contributors. All rights reserved.
"""The basic and relational kernels of an RSA layer (paper Fig. 3).

For one RSA layer and one query position ``n = (t, h, w)`` of its feature
map, the kernels that weigh the ``kt x kh x kw`` context of ``n`` are, for
each of the L queries ``q_n^l`` (Eq. 8 and 12)::

    basic       kV[l] = q_n^l P^T,                        P = H2 P1^T   [M]
    relational  kR[l] = q_n^l (XK_n (*) r(H1)) H2^T                     [M]

(``(*)`` is the channel-wise convolution of Eq. 10). :func:`visualize` feeds
one clip through the backbone, takes the layer's input, computes both
kernels at ``n`` with the literal reference
(:func:`mmrsa.models.common.rsa_reference.reference_kernels`, through
:func:`rsa_kernels`) and draws, into ``out_dir``:

- ``frames.png``: the T input frames, the query's receptive cell in red on
  frame t, the context window in yellow on frames t - kt//2 .. t + kt//2;
- ``kernels.png``: per chosen query l, the kt spatial slices of kV and of kR
  (red positive, blue negative, one colour scale per kernel);
- ``figure.png``: both, stacked as in the paper's figure;
- the same three with ``_reversed`` for the time-reversed clip, with the
  query on the same frame (t -> T - 1 - t);
- ``kernels.npz``: the kernels ``[L, kt, kh, kw]`` of both clips.

These seven files of an earlier run in ``out_dir`` are kept unless
``force`` (``--force``); nothing else there is touched.

At the first RSA layer the query depends on its own frame only, so the basic
kernel is the same for the reversed clip while the relational kernel, built
from the query's correlations with the context, changes (paper Sec. 5.6).

:func:`attention_vs_rsa_figure` draws the supplementary Fig. 3 comparison:
the self-attention kernels ``σ(qK^T + qP^T)`` of a model with a
:class:`~mmrsa.models.common.LocalSelfAttention` layer next to the basic and
relational kernels of a model with an RSA layer in the same block, for a
clip and its time reversal, in one PNG, and measures how each kernel of the
reversed clip relates to the original one (unchanged, or flipped in time).

The clip is a video file (read with decord, as MMAction2 does, else OpenCV)
or a folder of frames (SSv1 rawframes); T frames are sampled as the test
pipeline samples them (the middle of T equal segments) and resized and
cropped by the config's test ``Resize`` / ``CenterCrop``. The config is read
and the model built by :mod:`mmrsa.apis.model`; the checkpoint is an mmrsa
checkpoint, read by the safe loader (no code from it runs unless the user
trusts the file, :func:`mmrsa.fileio.checkpoint.trust_checkpoint`) and
checked to fit the model, or ``'none'`` for random weights. The files are
written atomically (:func:`mmrsa.fileio.atomic.write_atomic`). The default
layer is the first RSA layer; the default query is frame T // 2 at the
feature cell with the largest frame difference around it. Drawing needs
matplotlib.
"""
import functools
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config

from mmaction.registry import TRANSFORMS
from ..apis.model import build_model as build_recognizer
from ..apis.model import load_config
from ..engine import CheckpointMismatchError
from ..evaluation.reversal import kernel_flip_scores
from ..fileio.atomic import OverwriteRefusedError, write_atomic
from ..fileio.checkpoint import CheckpointFileError
from ..models.backbones.rsanet import FrameTransform
from ..models.common.local_attention import LocalSelfAttention
from ..models.common.rsa import RSA
from ..models.common.rsa_reference import reference_kernels

__all__ = [
    'rsa_kernels', 'layer_input', 'build_model', 'read_frames',
    'sample_indices', 'prepare_clip', 'find_layer', 'default_query',
    'save_figures', 'visualize', 'OUTPUT_FILES', 'check_out_dir',
    'find_attention', 'attention_kernels', 'attention_vs_rsa_figure'
]

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp')

#: What :func:`visualize` writes into its output folder.
OUTPUT_FILES = tuple(
    f'{name}{suffix}.png' for suffix in ('', '_reversed')
    for name in ('frames', 'kernels', 'figure')) + ('kernels.npz', )


def check_out_dir(out_dir: str, force: bool = False) -> None:
    """Refuse an output folder that holds pictures of an earlier run
    (:data:`OUTPUT_FILES`) unless ``force``.

    Raises:
        OverwriteRefusedError: ``out_dir`` is a file, one of the output names
            is a folder, or (without ``force``) one of them exists (a
            ``FileExistsError``, as :func:`mmrsa.fileio.atomic.
            refuse_existing` raises for one file).
    """
    if osp.lexists(out_dir) and not osp.isdir(out_dir):
        raise OverwriteRefusedError(
            f'--out {out_dir} is a file; give a folder.')
    existing = [n for n in OUTPUT_FILES if osp.lexists(osp.join(out_dir, n))]
    folders = [n for n in existing if osp.isdir(osp.join(out_dir, n))]
    if folders:
        raise OverwriteRefusedError(
            f'{out_dir} holds folders named as the output files '
            f'({", ".join(folders)}); they are never replaced: choose '
            f'another --out.')
    if existing and not force:
        raise OverwriteRefusedError(
            f'{out_dir} already holds {", ".join(existing)} (of an earlier '
            f'run?); pass --force to overwrite these files (nothing else '
            f'there is touched), or choose another --out.')


# ---------------------------------------------------------------------- #
# kernels
# ---------------------------------------------------------------------- #
@torch.no_grad()
def rsa_kernels(layer: RSA, x: torch.Tensor,
                position: Tuple[int, int, int]) -> Dict[str, torch.Tensor]:
    """Basic and relational kernels of ``layer`` at one position, as the
    literal reference computes them
    (:func:`mmrsa.models.common.rsa_reference.reference_kernels`).

    Args:
        layer (RSA): The layer.
        x (torch.Tensor): Its input ``[1, C, T, H, W]``.
        position (tuple[int, int, int]): ``(t, h, w)`` of the query.

    Returns:
        dict: ``'basic'`` and ``'relational'``, each ``[L, kt, kh, kw]`` (or
        None when the layer has no such kernel). Context index
        ``(i, j, k)`` is the position ``(t + i - kt//2, h + j - kh//2,
        w + k - kw//2)``.

    Raises:
        ValueError: The query is outside the layer's feature map.
    """
    kernels = reference_kernels(layer, x, [position])  # [N, 1, L, M]
    return {
        name:
        (None if kernel is None else kernel[0,
                                            0].reshape(-1, *layer.kernel_size))
        for name, kernel in kernels.items()
    }


class _Stop(Exception):
    pass


@torch.no_grad()
def layer_input(model, clip: torch.Tensor, layer: RSA) -> torch.Tensor:
    """The input ``[1, C, T, H, W]`` of ``layer`` for ``clip``
    ``[T, 3, H, W]``."""
    captured = {}

    def hook(module, args):
        captured['x'] = args[0]
        raise _Stop

    handle = layer.register_forward_pre_hook(hook)
    try:
        model.backbone(clip)
    except _Stop:
        pass
    finally:
        handle.remove()
    frames = captured['x']  # [T, C, H, W]
    return frames.unsqueeze(0).transpose(1, 2).contiguous()  # [1, C, T, H, W]


# ---------------------------------------------------------------------- #
# model, checkpoint, clip
# ---------------------------------------------------------------------- #
def build_model(cfg: Config, checkpoint: str):
    """The config's recognizer with ``checkpoint`` loaded, in eval mode
    (:func:`mmrsa.apis.build_model`, which checks that the checkpoint fits);
    ``'none'``: random weights, the same on every run.

    Raises:
        CheckpointFileError: ``checkpoint`` holds no dict of weights.
        ValueError: It is a checkpoint of the authors' code, or does not
            fit the config's model.
    """
    if checkpoint.lower() == 'none':
        torch.manual_seed(0)  # the same pictures on every run
        # MSRA, as before training
        return build_recognizer(cfg, init_weights=True)
    try:
        return build_recognizer(cfg, checkpoint)
    except CheckpointMismatchError as err:
        if any(k.startswith('base_model.') for k in err.unexpected):
            raise ValueError(
                f'{checkpoint} is a checkpoint of the authors\' code; '
                f'convert it first with '
                f'tools/convert/convert_official_checkpoint.py.') from None
        if not (err.missing or err.unexpected or err.mismatched):
            # not a dict of weights at all
            raise CheckpointFileError(
                f'{checkpoint} is not an mmrsa checkpoint: {err}') from None
        raise


def read_frames(video: str) -> List[np.ndarray]:
    """All frames of a video file or a folder of images, RGB uint8."""
    import cv2
    if osp.isdir(video):
        names = sorted(
            n for n in os.listdir(video) if n.lower().endswith(IMAGE_EXTS))
        if not names:
            raise ValueError(f'{video} holds no image files {IMAGE_EXTS}.')
        frames = []
        for name in names:
            image = cv2.imread(osp.join(video, name), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f'cannot read {osp.join(video, name)}.')
            frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        return frames
    if not osp.isfile(video):
        raise ValueError(f'{video}: no such file or folder.')
    try:
        import decord
        reader = decord.VideoReader(video)
        return list(reader.get_batch(list(range(len(reader)))).asnumpy())
    except ImportError:
        capture = cv2.VideoCapture(video)
        frames = []
        while True:
            ok, image = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        if not frames:
            raise ValueError(f'cannot read frames from {video}.')
        return frames


def sample_indices(num_frames: int, num_segments: int) -> List[int]:
    """The middle frame of each of ``num_segments`` equal segments, as
    ``SampleFrames(test_mode=True)`` takes them."""
    return [
        min(int((i + 0.5) * num_frames / num_segments), num_frames - 1)
        for i in range(num_segments)
    ]


def prepare_clip(cfg: Config, frames: Sequence[np.ndarray],
                 num_segments: int) -> Tuple[torch.Tensor, np.ndarray]:
    """Sample, resize and crop as the config's test pipeline, normalise.

    Returns:
        tuple: the clip ``[T, 3, H, W]`` (normalised) and the frames shown
        ``[T, H, W, 3]`` uint8.
    """
    picked = [frames[i] for i in sample_indices(len(frames), num_segments)]
    results = dict(
        imgs=[np.ascontiguousarray(f) for f in picked],
        img_shape=picked[0].shape[:2],
        original_shape=picked[0].shape[:2],
        modality='RGB')
    pipeline = cfg.get('test_dataloader', {}).get(
        'dataset', {}).get('pipeline') or cfg.get('test_pipeline') or []
    for step in pipeline:
        if step.get('type') in ('Resize', 'CenterCrop'):
            results = TRANSFORMS.build(dict(step))(results)
    shown = np.stack(results['imgs']).astype(np.uint8)
    preprocessor = cfg.model.get('data_preprocessor', {})
    mean = torch.tensor(preprocessor.get('mean', [0., 0., 0.])).view(3, 1, 1)
    std = torch.tensor(preprocessor.get('std', [1., 1., 1.])).view(3, 1, 1)
    clip = torch.from_numpy(shown).float().permute(0, 3, 1, 2)
    return (clip - mean) / std, shown


def find_layer(model, name: Optional[str]) -> Tuple[str, RSA]:
    """The RSA layer of block ``name`` (``'layer1.2'``), default the
    first."""
    layers = [(n[:-len('.conv2.conv')], m)
              for n, m in model.backbone.named_modules() if isinstance(m, RSA)]
    if not layers:
        raise ValueError('the model has no RSA layer.')
    if name is None:
        return layers[0]
    for block, layer in layers:
        if block == name:
            return block, layer
    raise ValueError(f'{name!r} holds no RSA layer; the RSA layers are in '
                     f'{[b for b, _ in layers]}.')


def default_query(shown: np.ndarray,
                  feature_size: Tuple[int, int]) -> Tuple[int, int, int]:
    """Frame T // 2, at the feature cell where the frames around it differ
    most (the moving object); the centre when nothing moves."""
    frames = torch.from_numpy(shown).float()  # [T, H, W, 3]
    t = len(frames) // 2
    before, after = frames[max(t - 1, 0)], frames[min(t + 1, len(frames) - 1)]
    motion = (after - before).abs().sum(-1)[None, None]  # [1, 1, H, W]
    motion = F.adaptive_avg_pool2d(motion, feature_size)[0, 0]
    if motion.max() <= 0:
        return t, feature_size[0] // 2, feature_size[1] // 2
    h, w = divmod(int(motion.argmax()), feature_size[1])
    return t, h, w


# ---------------------------------------------------------------------- #
# drawing
# ---------------------------------------------------------------------- #
def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def draw_frames(ax_row, shown: np.ndarray, position: Tuple[int, int, int],
                kernel_size: Tuple[int, int, int],
                feature_size: Tuple[int, int]) -> None:
    """The frames, the query cell (red) and its context (yellow)."""
    from matplotlib.patches import Rectangle
    t, h, w = position
    kt, kh, kw = kernel_size
    cell_h = shown.shape[1] / feature_size[0]
    cell_w = shown.shape[2] / feature_size[1]
    for i, ax in enumerate(ax_row):
        ax.imshow(shown[i])
        ax.set_xticks([])
        ax.set_yticks([])
        offset = i - t
        ax.set_title(
            f'frame {i}' + (f' (t{offset:+d})' if offset else ' (query)'),
            fontsize=7)
        if abs(offset) <= kt // 2:
            ax.add_patch(
                Rectangle(
                    ((w - kw // 2) * cell_w - .5, (h - kh // 2) * cell_h - .5),
                    kw * cell_w,
                    kh * cell_h,
                    fill=False,
                    edgecolor='yellow',
                    linewidth=1.2))
        if offset == 0:
            ax.add_patch(
                Rectangle((w * cell_w - .5, h * cell_h - .5),
                          cell_w,
                          cell_h,
                          fill=False,
                          edgecolor='red',
                          linewidth=1.5))
            # a marker too: at early layers a cell is a few pixels
            ax.plot(
                (w + .5) * cell_w - .5, (h + .5) * cell_h - .5,
                'o',
                markersize=3,
                color='red')


def draw_kernels(axes, kernels: Dict[str, Optional[np.ndarray]],
                 queries: Sequence[int], scales: Dict[str,
                                                      np.ndarray]) -> None:
    """One row per query: kt slices of kV, a gap, kt slices of kR."""
    names = [n for n in ('basic', 'relational') if kernels[n] is not None]
    kt = next(kernels[n] for n in names).shape[1]
    labels = {'basic': 'basic kV', 'relational': 'relational kR'}
    for row, l in enumerate(queries):
        col = 0
        for name in names:
            scale = float(scales[name][l]) or 1.
            for i in range(kt):
                ax = axes[row][col]
                ax.imshow(
                    kernels[name][l, i],
                    cmap='RdBu_r',
                    vmin=-scale,
                    vmax=scale,
                    interpolation='nearest')
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(
                        f'{labels[name]}\nt{i - kt // 2:+d}' if i == kt //
                        2 else f't{i - kt // 2:+d}',
                        fontsize=7)
                if col == 0:
                    ax.set_ylabel(f'query {l}', fontsize=7)
                col += 1
            if col < len(axes[row]):
                axes[row][col].axis('off')  # gap between the two kernels
                col += 1


def _save_png(fig, path: str) -> None:
    """Write ``fig`` to ``path`` atomically (never a half-written file)."""
    write_atomic(
        path,
        functools.partial(
            fig.savefig, format='png', dpi=150, bbox_inches='tight'))


def save_figures(out_dir: str, suffix: str, shown: np.ndarray,
                 kernels: Dict[str, Optional[np.ndarray]],
                 position: Tuple[int, int, int], kernel_size: Tuple[int, int,
                                                                    int],
                 feature_size: Tuple[int, int], queries: Sequence[int],
                 scales: Dict[str, np.ndarray], title: str) -> List[str]:
    """Write ``frames``, ``kernels`` and ``figure`` PNGs for one clip."""
    plt = _plt()
    num_frames = len(shown)
    names = [n for n in ('basic', 'relational') if kernels[n] is not None]
    kt = kernel_size[0]
    kernel_cols = len(names) * (kt + 1) - 1
    paths = []

    fig, axes = plt.subplots(
        1,
        num_frames,
        figsize=(1.3 * num_frames, 1.6),
        squeeze=False,
        layout='constrained')
    draw_frames(axes[0], shown, position, kernel_size, feature_size)
    fig.suptitle(title, fontsize=8)
    paths.append(osp.join(out_dir, f'frames{suffix}.png'))
    _save_png(fig, paths[-1])
    plt.close(fig)

    fig, axes = plt.subplots(
        len(queries),
        kernel_cols,
        figsize=(0.9 * kernel_cols, 0.95 * len(queries) + 0.4),
        squeeze=False,
        layout='constrained')
    draw_kernels(axes, kernels, queries, scales)
    fig.suptitle(title, fontsize=8)
    paths.append(osp.join(out_dir, f'kernels{suffix}.png'))
    _save_png(fig, paths[-1])
    plt.close(fig)

    width = max(1.3 * num_frames, 0.9 * kernel_cols)
    frames_height = 0.9 * width / num_frames + 0.3
    kernels_height = 0.95 * len(queries) + 0.4
    fig = plt.figure(
        figsize=(width, frames_height + kernels_height), layout='constrained')
    top, bottom = fig.subfigures(
        2, 1, height_ratios=[frames_height, kernels_height])
    draw_frames(
        top.subplots(1, num_frames, squeeze=False)[0], shown, position,
        kernel_size, feature_size)
    draw_kernels(
        bottom.subplots(len(queries), kernel_cols, squeeze=False), kernels,
        queries, scales)
    fig.suptitle(title, fontsize=8)
    paths.append(osp.join(out_dir, f'figure{suffix}.png'))
    _save_png(fig, paths[-1])
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------- #
def visualize(config: str,
              checkpoint: str,
              video: str,
              out_dir: str,
              layer_name: Optional[str] = None,
              query: Optional[Sequence[int]] = None,
              queries: Optional[Sequence[int]] = None,
              cfg_options: Optional[Dict] = None,
              force: bool = False) -> Dict:
    """Compute and draw the kernels; see the module docstring.

    Args:
        config (str): The config of the model.
        checkpoint (str): An mmrsa checkpoint, or ``'none'`` for random
            weights.
        video (str): A video file or a folder of frames.
        out_dir (str): Where the figures and ``kernels.npz`` go.
        layer_name (str, optional): The block holding the RSA layer, e.g.
            ``'layer1.2'``. Defaults to the first RSA layer.
        query (Sequence[int], optional): ``(t, h, w)`` on the layer's
            feature map. Defaults to frame T // 2 where the frames change
            most.
        queries (Sequence[int], optional): Which of the L queries to draw.
            Defaults to the first 4.
        cfg_options (dict, optional): Overrides merged into the config.
        force (bool): Overwrite the files of an earlier run in ``out_dir``
            (:data:`OUTPUT_FILES`). Defaults to False.

    Returns:
        dict: ``layer``, ``position`` (t, h, w), ``queries``, ``files``,
        and ``basic_change`` / ``relational_change``: the largest absolute
        difference of each kernel between the clip and its reversal,
        relative to the kernel's largest magnitude (None without that
        kernel).

    Raises:
        OverwriteRefusedError: See :func:`check_out_dir`.
    """
    check_out_dir(out_dir, force)
    cfg = load_config(config, cfg_options)
    model = build_model(cfg, checkpoint)
    block, layer = find_layer(model, layer_name)
    num_segments = model.backbone.num_segments
    clip, shown = prepare_clip(cfg, read_frames(video), num_segments)

    x = layer_input(model, clip, layer)
    x_reversed = layer_input(model, clip.flip(0), layer)
    feature_size = tuple(x.shape[-2:])
    if query is None:
        position = default_query(shown, feature_size)
    else:
        position = tuple(int(v) for v in query)
    t, h, w = position
    reversed_position = (num_segments - 1 - t, h, w)
    if queries is None:
        queries = list(range(min(4, layer.num_queries)))
    bad = [q for q in queries if not 0 <= q < layer.num_queries]
    if bad:
        raise ValueError(f'queries {bad} do not exist; the layer has '
                         f'L = {layer.num_queries} queries.')

    kernels = {
        k: (None if v is None else v.numpy())
        for k, v in rsa_kernels(layer, x, position).items()
    }
    kernels_rev = {
        k: (None if v is None else v.numpy())
        for k, v in rsa_kernels(layer, x_reversed, reversed_position).items()
    }
    # one colour scale per kernel type and query, shared by both clips
    scales = {
        name:
        np.maximum(
            np.abs(kernels[name]).reshape(layer.num_queries, -1).max(1),
            np.abs(kernels_rev[name]).reshape(layer.num_queries, -1).max(1))
        for name in kernels if kernels[name] is not None
    }
    check_out_dir(out_dir, force)  # again: the folder may have changed
    os.makedirs(out_dir, exist_ok=True)
    context = 'x'.join(map(str, layer.kernel_size))
    label = (f'{block} (L={layer.num_queries}, M={context}), query at '
             f't={t}, h={h}, w={w} of {num_segments}x{feature_size[0]}x'
             f'{feature_size[1]}')
    files = save_figures(out_dir, '', shown, kernels, position,
                         layer.kernel_size, feature_size, queries, scales,
                         label)
    files += save_figures(
        out_dir, '_reversed', shown[::-1].copy(), kernels_rev,
        reversed_position, layer.kernel_size, feature_size, queries, scales,
        label.replace(f't={t}', f't={t}->'
                      f'{reversed_position[0]}') + ', time reversed')
    arrays = {}
    for suffix, ks in (('', kernels), ('_reversed', kernels_rev)):
        for name, kernel in ks.items():
            if kernel is not None:
                arrays[f'{name}{suffix}'] = kernel
    arrays['position'] = np.array(position)
    arrays['reversed_position'] = np.array(reversed_position)
    files.append(osp.join(out_dir, 'kernels.npz'))
    write_atomic(files[-1], lambda f: np.savez(f, **arrays))

    def change(name):
        if kernels[name] is None:
            return None
        scale = max(np.abs(kernels[name]).max(), 1e-12)
        return float(np.abs(kernels[name] - kernels_rev[name]).max() / scale)

    return dict(
        layer=block,
        position=position,
        queries=list(queries),
        files=files,
        basic_change=change('basic'),
        relational_change=change('relational'))


# ---------------------------------------------------------------------- #
# paper Fig. 3: self-attention kernels next to RSA's, clip and reversal
# ---------------------------------------------------------------------- #
def find_attention(model,
                   name: Optional[str] = None) -> Tuple[str, FrameTransform]:
    """The frame wrapper of the :class:`LocalSelfAttention` layer of block
    ``name`` (``'layer3.1'``), default the first."""
    layers = [(n[:-len('.conv2.conv')], m)
              for n, m in model.backbone.named_modules()
              if isinstance(m, FrameTransform)
              and isinstance(m.layer, LocalSelfAttention)]
    if not layers:
        raise ValueError('the model has no self-attention layer.')
    for block, frame in layers:
        if name is None or block == name:
            return block, frame
    raise ValueError(f'{name!r} holds no self-attention layer; they are in '
                     f'{[b for b, _ in layers]}.')


@torch.no_grad()
def attention_kernels(layer: LocalSelfAttention, x: torch.Tensor,
                      position: Tuple[int, int, int]) -> torch.Tensor:
    """The kernels ``σ(q XK^T + q P^T)`` (or the layer's variant) of the L
    queries at ``position`` = ``(t, h, w)``, ``[L, kt, kh, kw]``, for the
    input ``x`` ``[1, C, T, H, W]``; 0 on neighbours outside the clip."""
    t, h, w = position
    return layer.kernels(x)[0, :, t, h, w]


def attention_vs_rsa_figure(sa_config: str,
                            sa_checkpoint: str,
                            rsa_config: str,
                            rsa_checkpoint: str,
                            video: str,
                            out: str,
                            block: Optional[str] = None,
                            query: Optional[Sequence[int]] = None,
                            queries: Optional[Sequence[int]] = None,
                            force: bool = False) -> Dict:
    """Paper Fig. 3 for two trained models: the self-attention kernels
    ``σ(qK^T + qP^T)`` of a model with a :class:`LocalSelfAttention` layer
    next to the basic and relational kernels of a model with an RSA layer
    in the same block, for one clip and its time reversal, in one PNG.

    Both models see the same frames; the query is the same cell (default:
    frame T // 2 where the frames change most), on frame ``T - 1 - t`` for
    the reversed clip. Each kernel keeps one colour scale per query for
    both clips.

    Args:
        sa_config (str): Config of the self-attention model.
        sa_checkpoint (str): Its checkpoint (``'none'``: random weights).
        rsa_config (str): Config of the RSA model.
        rsa_checkpoint (str): Its checkpoint.
        video (str): A video file or a folder of frames.
        out (str): The PNG.
        block (str, optional): The block of both layers, e.g.
            ``'layer3.1'``. Defaults to the first of each model.
        query (Sequence[int], optional): ``(t, h, w)`` on the feature map.
        queries (Sequence[int], optional): Which of the L queries to draw.
            Defaults to the first 4.
        force (bool): Overwrite ``out``. Defaults to False.

    Returns:
        dict: ``block``, ``position``, ``queries``, ``file`` and, for
        ``'attention'``, ``'basic'`` and ``'relational'``, the
        :func:`~mmrsa.evaluation.kernel_flip_scores` of the reversed clip's
        kernel (``same``: 0 when it does not change; ``flipped``: 0 when it
        is the original kernel flipped in time).

    Raises:
        OverwriteRefusedError: ``out`` exists and not ``force``.
    """
    from ..fileio.atomic import refuse_existing
    refuse_existing(out, force)
    sa_cfg, rsa_cfg = load_config(sa_config), load_config(rsa_config)
    sa_model = build_model(sa_cfg, sa_checkpoint)
    rsa_model = build_model(rsa_cfg, rsa_checkpoint)
    sa_block, sa_frame = find_attention(sa_model, block)
    rsa_block, rsa_layer = find_layer(rsa_model, block or sa_block)
    num_segments = sa_model.backbone.num_segments
    clip, shown = prepare_clip(sa_cfg, read_frames(video), num_segments)

    inputs = {}
    for key, model, layer in (('sa', sa_model, sa_frame), ('rsa', rsa_model,
                                                           rsa_layer)):
        inputs[key] = (layer_input(model, clip, layer),
                       layer_input(model, clip.flip(0), layer))
    feature_size = tuple(inputs['sa'][0].shape[-2:])
    position = (
        tuple(int(v) for v in query) if query is not None else default_query(
            shown, feature_size))
    t, h, w = position
    positions = (position, (num_segments - 1 - t, h, w))
    attention = sa_frame.layer
    if queries is None:
        queries = list(range(min(4, attention.num_queries)))

    kernels = {}  # name -> (original, reversed) [L, kt, kh, kw]
    kernels['attention'] = tuple(
        attention_kernels(attention, x, p).numpy()
        for x, p in zip(inputs['sa'], positions))
    rsa_pair = [
        rsa_kernels(rsa_layer, x, p) for x, p in zip(inputs['rsa'], positions)
    ]
    for name in ('basic', 'relational'):
        if rsa_pair[0][name] is not None:
            kernels[name] = tuple(k[name].numpy() for k in rsa_pair)

    labels = dict(
        attention='self-attention σ(qK+qP)',
        basic='RSA basic kV',
        relational='RSA relational kR')
    plt = _plt()
    kt = attention.kernel_size[0]
    cols = len(kernels) * (kt + 1) - 1
    rows = 2 * (1 + len(queries))
    num_frames = len(shown)
    fig = plt.figure(
        figsize=(max(0.8 * cols, 1.2 * num_frames), 0.85 * rows + 0.6),
        layout='constrained')
    parts = fig.subfigures(4, 1, height_ratios=[1, len(queries)] * 2)
    for clip_index, suffix in enumerate(('', ', time reversed')):
        frames = shown if clip_index == 0 else shown[::-1].copy()
        top = parts[2 * clip_index].subplots(1, num_frames, squeeze=False)[0]
        draw_frames(top, frames, positions[clip_index], attention.kernel_size,
                    feature_size)
        parts[2 * clip_index].suptitle(
            f'clip{suffix}: query at t={positions[clip_index][0]}, h={h}, '
            f'w={w} ({sa_block} / {rsa_block}, M='
            f'{"x".join(map(str, attention.kernel_size))})',
            fontsize=8)
        axes = parts[2 * clip_index + 1].subplots(
            len(queries), cols, squeeze=False)
        for row, qi in enumerate(queries):
            col = 0
            for name, pair in kernels.items():
                scale = float(
                    max(np.abs(pair[0][qi]).max(),
                        np.abs(pair[1][qi]).max())) or 1.
                for i in range(kt):
                    ax = axes[row][col]
                    ax.imshow(
                        pair[clip_index][qi, i],
                        cmap='RdBu_r',
                        vmin=-scale,
                        vmax=scale,
                        interpolation='nearest')
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if row == 0:
                        ax.set_title(
                            (f'{labels[name]}\n' if i == kt // 2 else '') +
                            f't{i - kt // 2:+d}',
                            fontsize=6)
                    if col == 0:
                        ax.set_ylabel(f'query {qi}', fontsize=7)
                    col += 1
                if col < cols:
                    axes[row][col].axis('off')
                    col += 1
    _save_png(fig, out)
    plt.close(fig)
    return dict(
        block=sa_block,
        position=position,
        queries=list(queries),
        file=out,
        **{
            name: kernel_flip_scores(*pair)
            for name, pair in kernels.items()
        })
