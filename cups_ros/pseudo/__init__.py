"""Stage 1: panoptic pseudo-labels and pseudo-tracks from stereo video, with no human labels."""
