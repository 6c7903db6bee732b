# Copyright (c) mmrsa contributors. All rights reserved.
from .transforms import LabelAwareFlip, direction_label_ids, read_label_names

__all__ = ['LabelAwareFlip', 'direction_label_ids', 'read_label_names']
