"""Overlay networks across hosts (flannel's model on etcd, Docker's cluster-store keys).

    etcd (cluster store)                         one host
    /pycni/overlay/networks/<name>   -> NetworkSpec JSON (subnet, subnetLen, vni, mtu)
    /pycni/overlay/subnets/<name>/<a.b.c.d-len>  -> SubnetLease JSON, attached to an etcd
                                        lease with a TTL: the host's share of the network
                                        (publicIP = its underlay address, vtepMAC)

    agent (pycni.overlay.agent, one per host and network, started on demand by the
    `overlay` CNI plugin or by netctl, or under systemd):
      - holds the host's subnet lease (create-if-absent, keepalive every TTL/3; a host
        restarting within the TTL finds its own key and takes it back)
      - programs the VXLAN device: for each other host's lease a route to its subnet via
        its VTEP address, a permanent neighbour entry and an FDB entry to its publicIP;
        removes them when the lease goes (a host not in etcd gets no traffic)
      - writes <state>/overlay/<name>/subnet.json, which the plugin reads: the ADD path
        does no etcd round trip.

Modules: `spec` (pure: configs, subnet arithmetic, the on-disk lease file), `store` (the
etcd client at one boundary; etcd3gw, i.e. etcd's v3 JSON gateway), `vxlan` (kernel edge),
`agent` (the per-host process).
"""
