"""Reports, one package per job: ``bench/`` (``pktlb bench``), ``compare/`` (``pktlb compare``),
``explain/`` (``pktlb explain``); ``stats_text`` renders ``pktlb stats``.  The jobs share no module."""
