# Copyright (c) mmrsa contributors. All rights reserved.
"""A horizontal flip that leaves direction-dependent classes alone.

Flipping a clip of "Pushing something from left to right" shows a push from
right to left, so the paper (supplementary Sec. 1) never flips clips whose
label names a direction. The classes are given as ids, or derived from the
dataset's label-name file.
"""
import json
import os.path as osp
import re
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from mmaction.datasets.transforms import Flip
from mmaction.registry import TRANSFORMS

__all__ = ['LabelAwareFlip', 'direction_label_ids', 'read_label_names']


def read_label_names(label_file: str) -> Dict[int, str]:
    """Read a label-name file into ``{id: name}``.

    Supported layouts:

    - ``.json`` mapping names to ids, as Something-Something V2's
      ``something-something-v2-labels.json`` (``{"Approaching ...": "0"}``);
    - ``.json`` list of names, the id being the position;
    - text (``.txt``, ``.csv``, ...) with one name per line, the id being the
      line number among the non-empty lines, as Something-Something V1's
      ``something-something-v1-labels.csv`` (the order MMAction2's data
      preparation uses for the ids).

    Args:
        label_file (str): Path of the file.

    Returns:
        dict[int, str]: Label names by id.
    """
    if not osp.isfile(label_file):
        raise ValueError(f'label_file {label_file!r} does not exist.')
    if label_file.endswith('.json'):
        with open(label_file, encoding='utf-8') as f:
            content = json.load(f)
        if isinstance(content, dict):
            return {int(i): name for name, i in content.items()}
        if isinstance(content, list):
            return dict(enumerate(content))
        raise ValueError(f'{label_file!r} must hold a JSON object '
                         f'{{name: id}} or a list of names.')
    with open(label_file, encoding='utf-8') as f:
        names = [line.strip() for line in f if line.strip()]
    return dict(enumerate(names))


def direction_label_ids(
    label_file: str, keywords: Sequence[str] = ('left', 'right')
) -> Tuple[int, ...]:
    """Ids of the classes whose name contains one of ``keywords`` as a word.

    Matching is case-insensitive and by whole word, so "upright" does not
    match "right".

    Args:
        label_file (str): A label-name file (see :func:`read_label_names`).
        keywords (Sequence[str]): Words that make a class direction
            dependent. Defaults to ``('left', 'right')``.

    Returns:
        tuple[int]: Sorted class ids.
    """
    if isinstance(keywords, str) or not keywords:
        raise ValueError(f'keywords must be a non-empty sequence of words, '
                         f'got {keywords!r}.')
    pattern = re.compile(
        r'\b(' + '|'.join(re.escape(k) for k in keywords) + r')\b',
        re.IGNORECASE)
    names = read_label_names(label_file)
    return tuple(
        sorted(i for i, name in names.items() if pattern.search(name)))


@TRANSFORMS.register_module()
class LabelAwareFlip(Flip):
    """MMAction2's ``Flip`` that never flips clips of the given classes.

    Clips whose label is in ``no_flip_labels`` (or, with ``label_file``, whose
    label name contains one of ``keywords``) pass unflipped, and are marked
    ``flip=False``; all other clips are flipped with probability
    ``flip_ratio`` exactly as ``Flip`` does. For multi-label samples a clip
    is protected if any of its labels is.

    Args:
        no_flip_labels (Sequence[int], optional): Class ids never flipped.
            Defaults to None.
        label_file (str, optional): Label-name file from which the ids of the
            classes naming one of ``keywords`` are added to
            ``no_flip_labels`` (see :func:`read_label_names`). Defaults to
            None.
        keywords (Sequence[str]): Words of ``label_file`` names that protect
            a class. Defaults to ``('left', 'right')``.
        flip_ratio (float): Probability of flipping any other clip.
            Defaults to 0.5.
        **kwargs: Other arguments of ``Flip`` (``direction``, ``lazy``, ...).
    """

    def __init__(self,
                 no_flip_labels: Optional[Sequence[int]] = None,
                 label_file: Optional[str] = None,
                 keywords: Sequence[str] = ('left', 'right'),
                 flip_ratio: float = 0.5,
                 **kwargs) -> None:
        if no_flip_labels is None and label_file is None:
            raise ValueError(
                'LabelAwareFlip needs no_flip_labels, label_file or both; '
                'use Flip to flip every clip.')
        if kwargs.get('flip_label_map') is not None:
            raise ValueError(
                'LabelAwareFlip does not flip the protected clips, so it does '
                'not remap labels; flip_label_map must not be set.')
        super().__init__(flip_ratio=flip_ratio, **kwargs)
        ids = set()
        if no_flip_labels is not None:
            if isinstance(no_flip_labels, (str, int)) or not all(
                    isinstance(i, (int, np.integer)) for i in no_flip_labels):
                raise ValueError(f'no_flip_labels must be a sequence of int '
                                 f'class ids, got {no_flip_labels!r}.')
            ids.update(int(i) for i in no_flip_labels)
        if label_file is not None:
            ids.update(direction_label_ids(label_file, keywords))
        self.no_flip_labels = frozenset(ids)
        self.label_file = label_file
        self.keywords = tuple(keywords)

    def is_protected(self, label) -> bool:
        """Whether a clip with ``label`` must not be flipped."""
        labels = np.asarray(label).reshape(-1)
        return any(int(i) in self.no_flip_labels for i in labels)

    def transform(self, results: Dict) -> Dict:
        """Flip ``results`` unless its label is protected.

        Args:
            results (dict): The result dict of the pipeline.

        Returns:
            dict: The updated result dict.
        """
        if 'label' in results and self.is_protected(results['label']):
            flip_ratio, self.flip_ratio = self.flip_ratio, 0.
            try:
                return super().transform(results)
            finally:
                self.flip_ratio = flip_ratio
        return super().transform(results)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(flip_ratio={self.flip_ratio}, '
                f'direction={self.direction}, '
                f'no_flip_labels={sorted(self.no_flip_labels)}, '
                f'label_file={self.label_file!r}, lazy={self.lazy})')
