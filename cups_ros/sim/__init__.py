"""Procedural synthetic stereo driving video with exact ground truth (depth, flow, panoptic tracks).

Entry points: ``generate_sequence`` (frames in memory), ``write_sequence`` / ``write_split`` (dataset
folders), ``SimSequence`` (loader), ``export_bag`` (ROS 2 bag), ``write_preview`` (montage + video).
"""

from cups_ros.sim.config import SimConfig, load_sim_config
from cups_ros.sim.dataset import SimFrame, SimSequence, write_sequence, write_split
from cups_ros.sim.generate import GeneratedFrame, generate_sequence, sequence_seed, split_seeds
from cups_ros.sim.towns import TOWNS, TownStyle

__all__ = [
    "TOWNS",
    "GeneratedFrame",
    "SimConfig",
    "SimFrame",
    "SimSequence",
    "TownStyle",
    "generate_sequence",
    "load_sim_config",
    "sequence_seed",
    "split_seeds",
    "write_sequence",
    "write_split",
]
