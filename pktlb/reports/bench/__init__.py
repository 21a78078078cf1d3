"""``pktlb bench``: every forwarder measured the same way in a lab, and ratios to the kernel's.

``run`` orchestrates (a lab per mode, the variants, the optional parts); ``options`` holds what a
run is asked and the generator's command line; ``lab`` is the bench's hands in a lab; ``variants``
the forwarders; ``drain``, ``lab_profile`` and ``lab_memory`` the optional measurements in the lab;
``profile`` and ``memory`` what needs no lab (per-stage costs of the pure data path, bytes per
flow); ``benchgen`` the traffic; ``results`` the records and their text.

Imports go one way, from a layer to those below it (no cycles, ``make lint`` checks):
``run``; ``drain``, ``lab_profile``, ``lab_memory``; ``variants``, ``options``; ``results``, ``lab``;
``memory``; ``profile``; ``benchgen``.
"""
