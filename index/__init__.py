"""The corpus and index build stage: ``ragroute corpus build|update|info`` (and ``ragroute index ...``)."""
