"""``pktlb bench``: every forwarder measured the same way in a lab, and ratios to the kernel's.

``run`` orchestrates (a lab per mode, the variants, the optional parts); ``options`` holds what a
run is asked and the generator's command line; ``lab`` is the bench's hands in a lab; ``variants``
the forwarders; ``drain``, ``lab_profile`` and ``memory`` the optional measurements; ``profile``
the per-stage costs of the pure data path; ``benchgen`` the traffic; ``results`` the records and
their text.
"""
