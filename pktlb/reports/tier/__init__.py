"""`pktlb tier-report`: how the LB tier spreads flows and what losing one LB costs (see run.py)."""
