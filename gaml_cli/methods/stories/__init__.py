"""Openstory++ (arXiv 2408.03695): the video-to-story-dataset pipeline of `gaml dataset`.

shots.py      shot boundaries: a content detector on decoded frames (PySceneDetect's
              ContentDetector rule, re-implemented on PyAV frames; circular hue difference)
frames.py     per-frame helpers: HSV, edge sharpness, perceptual hash, resize + centre crop
keyframes.py  `keyframes`: videos -> shots -> keyframes (JPEG) + JSONL records, sharded, resumable
regions.py    the offline `shapes` instance finder (colour regions on a smooth background)
caption.py    `caption`: the `shapes` captioner (shipped shapes classifier) and image-to-text
              models through transformers
polish.py     `polish`: stories of up to 5 frames; rule-based entity words, or a causal LM
annotate.py   `annotate`: instance-index palette PNG + the released JSON record; `shapes`, or
              nouns -> zero-shot detector -> SAM through transformers
pack.py       `pack`: records -> webdataset tar shards (jpg/json/png) with a size limit
bench.py      `bench`: Cohere-Bench-style scores (unofficial), shapes or CLIP features

Synthetic test videos with ground truth come from gaml_cli.datasets.videos
(`gaml dataset videos`). docs/stories.md says what is built and what is not.
"""
