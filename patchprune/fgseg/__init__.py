"""The small foreground-segmentation study (`patchprune bench fgseg`): does learned pruning work?

One folder, one job each: `config.py` (what defines a run; torch-free), `model.py` (`FgSegModel`: timm
ViT + light per-pixel head), `training.py` (data, dense and stage-2 steps, the two resumable training
stages), `evaluation.py` (streamed scoring, MACs, timing, FGS), `study.py` (one seed end to end,
aggregation, report) and `commands.py` (the command line; validates every option before any work).
Nothing is imported here, so registering the command stays cheap.
"""
