"""GraphMAE (Hou et al., KDD 2022; code THUDM/GraphMAE): a masked graph autoencoder for
self-supervised node and graph representations. gaml's version on torch-geometric layers; the
public code is the reference for its masking, re-masking and scaled cosine error."""
