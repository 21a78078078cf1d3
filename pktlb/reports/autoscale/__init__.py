"""Reports of an auto-scaling run: the timeline chart, the text/JSON summary, and the replay."""
