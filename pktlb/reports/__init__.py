"""Reports, one package per job: ``bench/``, ``compare/``, ``explain/``, ``l7features/`` (``l7-report``),
``tier/`` (``tier-report``), ``autoscale/``; ``stats_text`` renders ``pktlb stats``.  The jobs share no module."""
