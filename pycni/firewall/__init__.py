"""Firewall backends (nftables, iptables) behind one domain-level interface."""
