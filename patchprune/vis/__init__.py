"""Video instance segmentation with a pruned ViT (VPP's system): model, trackers, training,
evaluation and video segmentation. Import the submodules (`patchprune.vis.model`, `.train`,
`.evaluate`, `.segment`, ...); this package imports nothing heavy so the CLI starts fast."""
