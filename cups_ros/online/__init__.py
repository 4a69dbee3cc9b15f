"""Online learning on the vehicle: pseudo-label buffer, continued self-training, model promotion."""
