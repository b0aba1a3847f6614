"""The ingest stage: COCO and YOLO datasets to dataset directories, bad rows as rejects."""
