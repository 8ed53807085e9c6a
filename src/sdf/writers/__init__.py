"""Shard formats, each a writer with its reader, by the name `[pack].formats` uses."""

from sdf.writers import hf, megatron, nanotron, npy
from sdf.writers.shards import ShardFormat

FORMATS: dict[str, ShardFormat] = {f.name: f for f in (megatron.FORMAT, nanotron.FORMAT, hf.FORMAT, npy.FORMAT)}
