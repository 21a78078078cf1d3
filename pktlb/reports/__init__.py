"""Reports: text renderings of engine stats, and the compare / bench / explain jobs."""
