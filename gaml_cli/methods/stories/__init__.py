"""Openstory++ (arXiv 2408.03695): the video-to-story-dataset pipeline of `gaml dataset`.

shots.py      shot boundaries: a content detector on decoded frames (PySceneDetect's
              ContentDetector rule, re-implemented on PyAV frames in numpy)
frames.py     per-frame helpers: HSV, sharpness (variance of the Laplacian), perceptual hash,
              resize + centre crop
keyframes.py  `gaml dataset keyframes`: videos -> shots -> keyframes (JPEG) + JSONL records,
              sharded (--shard i/N) and resumable
pack.py       `gaml dataset pack`: records -> webdataset tar shards (jpg/json/png) with a size
              limit per shard

Synthetic test videos with ground truth come from gaml_cli.datasets.videos
(`gaml dataset videos`). What is not built yet (caption, polish, annotate, bench) is listed
in docs/stories.md.
"""
