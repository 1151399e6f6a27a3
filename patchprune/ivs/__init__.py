"""Instructed visual segmentation (InstructSeg at laptop scale) from Hugging Face parts; see docs/ivs.md."""
