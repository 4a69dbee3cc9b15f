"""cups_ros: unsupervised panoptic segmentation with tracked instances from stereo video, for ROS 2."""

__version__ = "0.1.0"
