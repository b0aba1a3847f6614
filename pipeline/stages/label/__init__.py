"""The label stage: unlabelled images to detector boxes, in resumable shards."""
