# Copyright (c) mmrsa contributors. All rights reserved.
"""Complexity of configs, and the paper's complexity tables."""
from .complexity import (ComplexityCounter, FrameConv3d, build_recognizer,
                         clip_shape_from_args, config_complexity,
                         config_frame_size, config_frames, flops_table,
                         load_config, swap_block_conv, views_per_video)
from .paper_tables import (FLOPS_TOL, PAPER_TABLES, PARAMS_TOL, PaperRow,
                           format_paper_tables, paper_table_rows)

__all__ = [
    'ComplexityCounter', 'FrameConv3d', 'build_recognizer',
    'clip_shape_from_args', 'config_complexity', 'config_frame_size',
    'config_frames', 'flops_table', 'load_config', 'swap_block_conv',
    'views_per_video', 'FLOPS_TOL', 'PAPER_TABLES', 'PARAMS_TOL', 'PaperRow',
    'format_paper_tables', 'paper_table_rows'
]
