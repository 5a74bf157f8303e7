"""Frontends: models that turn a clip into something a backend can score.

``autoencoder`` holds the DCASE AE baseline (its "embedding" is the reconstruction error);
further frontends (three-subnetworks model, SSL models) live in sibling modules.
"""
